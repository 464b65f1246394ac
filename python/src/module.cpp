// llmds._core: the one extension module. Each family binds itself in bind_<family>.cpp; the
// Python package re-exports the classes at the documented module paths (llmds.indexed_heap, ...).
#include <pybind11/pybind11.h>

#include <string>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"

namespace py = pybind11;

void bind_utils(py::module_& m);
void bind_core(py::module_& m);
void bind_sketch(py::module_& m);
void bind_kv(py::module_& m);
void bind_kv_tiered(py::module_& m);
void bind_routing(py::module_& m);
void bind_traces(py::module_& m);
void bind_ann(py::module_& m);
void bind_text(py::module_& m);
void bind_retrieval(py::module_& m);
void bind_sched(py::module_& m);
void bind_engine(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "Compiled core of llmds; import the public modules (llmds.indexed_heap, ...) instead.";
  m.attr("__version__") = LLMDS_VERSION_STRING;

  // std::invalid_argument -> ValueError, std::out_of_range -> IndexError,
  // std::bad_alloc -> MemoryError and std::overflow_error -> OverflowError are pybind11's own
  // translations; these add llmds' types (tried first, so KeyError wins over its base class).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const llmds::KeyError& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    } catch (const llmds::OutOfPages& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const llmds::BudgetExceeded& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const llmds::IOError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });

  bind_utils(m);
  bind_core(m);
  bind_sketch(m);
  bind_kv(m);
  bind_kv_tiered(m);
  bind_routing(m);
  bind_traces(m);
  bind_ann(m);
  bind_text(m);
  bind_retrieval(m);
  bind_sched(m);
  bind_engine(m);

  // pickle protocols 0 and 1 (and a bare __reduce__()) go through copyreg._reduce_ex, which
  // calls the class's first built-in base, pybind11's object type, to make an empty instance;
  // pybind11 throws a C++ exception out of that call and the process aborts. Every class
  // reduces as protocol 2 does instead, whatever the protocol: copyreg.__newobj__ and its
  // __getstate__ for the classes that pickle (they have __setstate__), TypeError for the others.
  const py::object newobj = py::module_::import("copyreg").attr("__newobj__");
  auto reduce = [newobj](const py::object& self) -> py::object {
    const py::handle cls = py::type::handle_of(self);
    if (!py::hasattr(cls, "__setstate__")) {
      throw py::type_error(fmt::format("cannot pickle '{}' object", std::string(py::str(cls.attr("__name__")))));
    }
    return py::make_tuple(newobj, py::make_tuple(cls), self.attr("__getstate__")());
  };
  for (const auto& [name, value] : m.attr("__dict__").cast<py::dict>()) {
    if (!PyType_Check(value.ptr())) continue;
    const py::handle cls = value;
    cls.attr("__reduce_ex__") = py::cpp_function([reduce](const py::object& self, int) { return reduce(self); },
                                                 py::name("__reduce_ex__"), py::is_method(cls), py::arg("protocol"));
    cls.attr("__reduce__") = py::cpp_function(reduce, py::name("__reduce__"), py::is_method(cls));
  }
}
