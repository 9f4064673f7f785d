// gometal._core's distributed functions: attach the process to an MPI job (handles from
// mpi4py), and collectives on NumPy arrays through the same communicator the kernels use.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "distributed/bindings.h"
#include "distributed/communicator.h"

namespace py = pybind11;

namespace gometal {
namespace {

std::shared_ptr<Communicator> attached(const char* what) {
  auto comm = current_communicator();
  if (comm == nullptr)
    throw std::runtime_error(std::string("[") + what + "] no communicator is attached; call gm.distributed.init() first");
  return comm;
}

}  // namespace

void bind_distributed(py::module_& m) {
  m.def(
      "attach_mpi_communicator",
      [](const std::string& library, intptr_t comm, intptr_t float_type, intptr_t byte_type, intptr_t sum_op,
         int handle_bytes) {
        MpiHandles h{library, comm, float_type, byte_type, sum_op, handle_bytes};
        std::shared_ptr<Communicator> c;
        {
          py::gil_scoped_release release;
          c = make_mpi_communicator(h);
        }
        set_current_communicator(c);
        return py::make_tuple(c->rank(), c->size());
      },
      py::arg("library"), py::arg("comm"), py::arg("float_type"), py::arg("byte_type"), py::arg("sum_op"),
      py::arg("handle_bytes"),
      "Makes the MPI communicator (handles from mpi4py) the process's; returns (rank, size).");
  m.def("detach_communicator", [] { set_current_communicator(nullptr); },
        "Forgets the process's communicator: collectives then act on one rank.");
  m.def(
      "communicator_info",
      [] {
        auto c = current_communicator();
        return c == nullptr ? py::make_tuple(0, 1, false) : py::make_tuple(c->rank(), c->size(), true);
      },
      "(rank, size, attached) of the process's communicator; (0, 1, False) without one.");
  m.def(
      "all_reduce_sum",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        auto comm = attached("all_reduce_sum");
        py::array_t<float> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        const float* in = x.data();
        float* o = out.mutable_data();
        const int64_t n = x.size();
        py::gil_scoped_release release;
        comm->all_reduce_sum(in, o, n);
        return out;
      },
      py::arg("x"), "The element-wise sum of x over every rank (float32).");
  m.def(
      "broadcast_bytes",
      [](py::array x, int root) {
        auto comm = attached("broadcast");
        if (!(x.flags() & py::array::c_style) || !x.writeable())
          throw py::value_error("[broadcast] needs a writable C-contiguous array");
        if (root < 0 || root >= comm->size())
          throw py::value_error("[broadcast] root must be a rank in [0, " + std::to_string(comm->size()) + "), got " +
                                std::to_string(root));
        void* data = x.mutable_data();
        const int64_t bytes = x.nbytes();
        py::gil_scoped_release release;
        comm->broadcast(data, bytes, root);
      },
      py::arg("x"), py::arg("root"), "Overwrites x (in place) with root's x.");
  m.def(
      "all_gather_bytes",
      [](py::array x) {
        auto comm = attached("all_gather");
        if (!(x.flags() & py::array::c_style))
          throw py::value_error("[all_gather] needs a C-contiguous array");
        std::vector<py::ssize_t> shape{comm->size()};
        shape.insert(shape.end(), x.shape(), x.shape() + x.ndim());
        py::array out(x.dtype(), shape);
        const void* in = x.data();
        void* o = out.mutable_data();
        const int64_t bytes = x.nbytes();
        py::gil_scoped_release release;
        comm->all_gather(in, bytes, o);
        return out;
      },
      py::arg("x"),
      "Every rank's x (the same shape and dtype on each), stacked in rank order: (size, *x.shape).");
  m.def("barrier", [] {
    auto comm = attached("barrier");
    py::gil_scoped_release release;
    comm->barrier();
  }, "Returns once every rank called it.");
}

}  // namespace gometal
