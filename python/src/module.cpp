// llmds._core: the one extension module. Each family binds itself in bind_<family>.cpp; the
// Python package re-exports the classes at the seed's module paths (llmds.indexed_heap, ...).
#include <pybind11/pybind11.h>

#include "llmds/core/errors.hpp"

namespace py = pybind11;

void bind_utils(py::module_& m);
void bind_core(py::module_& m);
void bind_sketch(py::module_& m);
void bind_kv(py::module_& m);
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
  bind_ann(m);
  bind_text(m);
  bind_retrieval(m);
  bind_sched(m);
  bind_engine(m);
}
