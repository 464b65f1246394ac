// A method called on an object whose __init__ never ran raises TypeError.
//
// `cls.__new__(cls)` makes an instance of a bound class without running __init__ (pickle and
// copy do the same, then call __setstate__). pybind11 then hands the method storage that holds
// no C++ object, and the method reads garbage: a segfault, a hang, a division by zero. Every
// class of the extension declares LLMDS_PY_REQUIRE_INIT(T) at file scope, before it is bound;
// the argument caster of T then checks pybind11's "holder constructed" flag (set only once a
// constructor or __setstate__ has run) before anything touches the object.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace llmds::python {

template <class T>
class InitialisedCaster : public pybind11::detail::type_caster_base<T> {
 public:
  bool load(pybind11::handle src, bool convert) {
    const pybind11::detail::type_info* info = pybind11::detail::get_type_info(typeid(T));
    if (info != nullptr && src && PyObject_TypeCheck(src.ptr(), info->type) &&
        !pybind11::detail::is_holder_constructed(src.ptr())) {
      throw pybind11::type_error(std::string(Py_TYPE(src.ptr())->tp_name) +
                                 " object is not initialised: its __init__ was never called");
    }
    return pybind11::detail::type_caster_base<T>::load(src, convert);
  }
};

}  // namespace llmds::python

/// For each bound class, at global scope, before the first use of T in bindings of that file.
/// A class bound in one file and used in another declares it in a header both include.
#define LLMDS_PY_REQUIRE_INIT(...)                                                        \
  namespace pybind11::detail {                                                            \
  template <>                                                                             \
  class type_caster<__VA_ARGS__> : public ::llmds::python::InitialisedCaster<__VA_ARGS__> {}; \
  }
