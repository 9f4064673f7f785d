// gometal._core: converts between NumPy and the engine, nothing more. C++ exceptions become
// Python exceptions (std::invalid_argument -> ValueError, others -> RuntimeError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <string>

#include "backends/backend.h"
#include "distributed/bindings.h"
#include "gometal/engine.h"
#include "gometal/ir.h"
#include "ir/op_registry.h"

namespace py = pybind11;
using namespace gometal;

namespace {

constexpr int kMaxInputs = 16;
constexpr int kMaxRank = 8;

py::tuple to_tuple(const Shape& s) {
  py::tuple t(s.size());
  for (size_t i = 0; i < s.size(); ++i) t[i] = s[i];
  return t;
}

// A Python attribute value as the registry takes it: bool, int (anything with __index__,
// NumPy integers included), float (anything with __float__), str, or a sequence of ints.
AttrValue to_attr_value(const std::string& op, const std::string& key, py::handle v) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>();
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  const bool listlike = py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v) ||
                        (py::isinstance<py::array>(v) && v.attr("ndim").cast<int>() > 0);
  if (!listlike && PyIndex_Check(v.ptr())) return v.cast<int64_t>();
  if (!listlike && (PyFloat_Check(v.ptr()) || py::hasattr(v, "__float__"))) return v.cast<double>();
  if (listlike) {
    std::vector<int64_t> ints;
    for (py::handle item : v.cast<py::sequence>()) {
      if (py::isinstance<py::bool_>(item) || !PyIndex_Check(item.ptr()))
        throw py::type_error("[" + op + "] attribute '" + key + "' must hold ints, got an item " +
                             std::string(py::str(py::repr(item))));
      ints.push_back(item.cast<int64_t>());
    }
    return ints;
  }
  throw py::type_error("[" + op + "] attribute '" + key + "' has an unsupported type " +
                       std::string(py::str(py::type::handle_of(v).attr("__name__"))));
}

// Every key and value is checked against the op's schema in its registry entry.
Attrs parse_attrs(const std::string& op, const py::dict& d) {
  const OpKind kind = op_from_name(op);
  Attrs a;
  for (auto item : d) {
    const std::string key = py::str(item.first);
    set_attribute(kind, a, key, to_attr_value(op, key, item.second));
  }
  return a;
}

// The NumPy dtype of each engine dtype; bfloat16 is ml_dtypes' (NumPy has none of its own).
py::dtype make_numpy_dtype(DType d) {
  switch (d) {
    case DType::BF16: return py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16"));
    case DType::Bool: return py::dtype("bool");
    default: return py::dtype(std::string(dtype_name(d)));
  }
}

// Each dtype is made once: building a NumPy dtype from its name on every output of every
// run cost microseconds a step.
py::dtype numpy_dtype(DType d) {
  static std::array<PyObject*, static_cast<size_t>(DType::kCount)> made{};
  PyObject*& slot = made[static_cast<size_t>(d)];
  if (slot == nullptr) slot = make_numpy_dtype(d).release().ptr();  // kept for the process
  return py::reinterpret_borrow<py::dtype>(slot);
}

DType array_dtype(const py::array& a, const std::string& input_name) {
  // The common dtypes by NumPy's kind and size, read from the descriptor in C; anything
  // else (bfloat16 from ml_dtypes, unsupported types) by name.
  const py::dtype dt = a.dtype();
  const auto size = dt.itemsize();
  switch (dt.kind()) {
    case 'f':
      if (size == 4) return DType::F32;
      if (size == 2) return DType::F16;
      break;
    case 'i':
      if (size == 4) return DType::I32;
      if (size == 8) return DType::I64;
      if (size == 1) return DType::I8;
      break;
    case 'u':
      if (size == 1) return DType::U8;
      break;
    case 'b':
      return DType::Bool;
    default:
      break;
  }
  const std::string name = py::str(dt.attr("name"));
  for (int d = 0; d < static_cast<int>(DType::kCount); ++d)
    if (name == dtype_name(static_cast<DType>(d))) return static_cast<DType>(d);
  throw py::type_error("[run] input '" + input_name + "' has dtype " + name +
                       ", which the engine does not hold; expected float32, float16, bfloat16, int8, uint8, "
                       "int32, int64 or bool");
}

// A C-contiguous array of `dtype` holding `value` (converted, as NumPy's asarray does).
py::array as_engine_array(py::handle value, DType dtype) {
  return py::module_::import("numpy").attr("asarray")(value, numpy_dtype(dtype), "C");
}

py::object to_python(const void* data, const Shape& shape, DType dtype) {
  // A scalar output comes back as a Python number, as before dtypes.
  if (shape.empty()) {
    switch (dtype) {
      case DType::F32: return py::float_(*static_cast<const float*>(data));
      case DType::I32: return py::int_(*static_cast<const int32_t*>(data));
      case DType::I64: return py::int_(*static_cast<const int64_t*>(data));
      default: break;
    }
  }
  py::array out(numpy_dtype(dtype), std::vector<py::ssize_t>(shape.begin(), shape.end()));
  std::memcpy(out.mutable_data(), data, static_cast<size_t>(numel(shape) * dtype_size(dtype)));
  if (!shape.empty()) return std::move(out);
  return out.attr("item")();
}

py::list run(Engine& engine, const std::string& name, const py::sequence& arrays) {
  const auto& decl = engine.function_inputs(name);
  const int count = static_cast<int>(py::len(arrays));
  if (count != static_cast<int>(decl.size()))
    throw py::value_error("[run] '" + name + "' takes " + std::to_string(decl.size()) + " inputs, got " +
                          std::to_string(count));
  if (count > kMaxInputs) throw py::value_error("[run] at most 16 inputs are supported");
  std::array<TensorView, kMaxInputs> views;
  std::array<std::array<int64_t, kMaxRank>, kMaxInputs> dims;
  std::vector<py::array> keep;
  keep.reserve(count);
  for (int i = 0; i < count; ++i) {
    const std::string& iname = engine.graph().node(decl[i]).attrs.name;
    py::object obj = arrays[i];
    if (!py::isinstance<py::array>(obj))
      throw py::type_error("[run] input '" + iname + "' must be a NumPy array, got " +
                           std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (!(a.flags() & py::array::c_style))
      throw py::type_error("[run] input '" + iname + "' must be C-contiguous");
    if (a.ndim() > kMaxRank) throw py::value_error("[run] input '" + iname + "' has rank > 8");
    views[i].dtype = array_dtype(a, iname);
    for (int d = 0; d < a.ndim(); ++d) dims[i][d] = a.shape(d);
    views[i].dims = dims[i].data();
    views[i].rank = static_cast<int>(a.ndim());
    views[i].data = a.data();
    keep.push_back(a);
  }
  // The outputs live in the plan's arena: keep the engine locked until they are copied.
  // The GIL is released before taking the lock, so the two never wait on each other.
  std::unique_lock<std::mutex> lock(engine.mutex(), std::defer_lock);
  const RunResult* result;
  {
    py::gil_scoped_release release;
    lock.lock();
    result = &engine.run(name, views.data(), count);
  }
  py::list out;
  for (size_t i = 0; i < result->data.size(); ++i)
    out.append(to_python(result->data[i], result->shapes[i], result->dtypes[i]));
  return out;
}

// A shape from Python: ints, with strings naming symbolic dims ("batch" is -1).
Shape shape_with_symbols(const py::sequence& dims) {
  Shape shape;
  for (py::handle d : dims) {
    if (py::isinstance<py::str>(d)) shape.push_back(dim_symbol(d.cast<std::string>()));
    else shape.push_back(d.cast<int64_t>());
  }
  return shape;
}

// {"threads": 2, "sample_tiling": False, "without_kernels": ["adam_update"]}: see
// BackendOptions.
BackendOptions backend_options(const py::dict& options) {
  BackendOptions out;
  for (auto item : options) {
    const std::string key = py::str(item.first);
    py::handle v = item.second;
    if (key == "without_kernels") {
      for (py::handle name : v.cast<py::sequence>()) out.without_kernels.push_back(op_from_name(name.cast<std::string>()));
    } else if (key == "threads") {
      if (py::isinstance<py::bool_>(v) || !PyIndex_Check(v.ptr()))
        throw py::type_error("[engine] backend option 'threads' must be an int, got " + std::string(py::str(py::repr(v))));
      out.threads = v.cast<int>();
    } else if (key == "sample_tiling") {
      if (!py::isinstance<py::bool_>(v))
        throw py::type_error("[engine] backend option 'sample_tiling' must be True or False, got " +
                             std::string(py::str(py::repr(v))));
      out.sample_tiling = v.cast<bool>() ? 1 : 0;
    } else {
      throw py::value_error("[engine] unknown backend option '" + key +
                            "'; options: threads, sample_tiling, without_kernels");
    }
  }
  return out;
}

// What the registry holds about op `name`, for tests and tools: arity, attribute types,
// gradient kind, traits, and whether it has a decomposition.
py::dict op_info(const std::string& name) {
  const OpDef& def = op_def(op_from_name(name));
  py::dict attrs;
  for (const AttrSpec& a : def.attrs) attrs[a.key] = std::string(attr_type_name(a.field));
  py::list traits;
  const std::pair<uint32_t, const char*> known[] = {{trait::kElementwise, "elementwise"}, {trait::kEffect, "effect"},
                                                    {trait::kCheck, "check"}, {trait::kRandom, "random"}};
  for (auto [bit, label] : known)
    if (def.has(bit)) traits.append(label);
  py::dict info;
  info["arity"] = def.arity;
  info["attrs"] = attrs;
  info["gradient"] = def.gradient == Gradient::Rule ? "rule" : def.gradient == Gradient::Zero ? "zero" : "none";
  info["traits"] = traits;
  info["decomposes"] = def.decompose != nullptr;
  return info;
}

// Runs `fn` holding the engine's lock, with the GIL released while waiting for it.
template <class Fn>
void locked(Engine& engine, Fn&& fn) {
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(engine.mutex());
  fn();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gometal's compiled engine: graph builder, autodiff, planner and CPU executor";

  py::class_<Graph>(m, "Graph")
      .def(py::init<>())
      // Dims are ints (-1: the batch) or symbol names ("seq").
      .def("input", [](Graph& g, const std::string& name, const py::sequence& shape, const std::string& dtype) {
             return g.input(name, shape_with_symbols(shape), dtype_from_name(dtype));
           }, py::arg("name"), py::arg("shape"), py::arg("dtype") = "float32")
      .def("variable", [](Graph& g, const std::string& name, const Shape& shape, const std::string& dtype) {
             return g.variable(name, shape, dtype_from_name(dtype));
           }, py::arg("name"), py::arg("shape"), py::arg("dtype") = "float32")
      .def("scalar", &Graph::scalar, py::arg("name"), py::arg("value"))
      // A number or an array, converted to `dtype` (float32 unless given).
      .def("constant", [](Graph& g, py::object value, const std::string& dtype_name_) {
             const DType dtype = dtype_from_name(dtype_name_);
             if (dtype == DType::F32 && (py::isinstance<py::float_>(value) || py::isinstance<py::int_>(value)))
               return g.constant(value.cast<float>());
             const py::array a = as_engine_array(value, dtype);
             Shape shape(a.shape(), a.shape() + a.ndim());
             const auto* first = static_cast<const uint8_t*>(a.data());
             return g.constant(shape, dtype, std::vector<uint8_t>(first, first + a.nbytes()));
           }, py::arg("value"), py::arg("dtype") = "float32")
      .def("op", [](Graph& g, const std::string& kind, const std::vector<int>& inputs, const py::dict& attrs) {
             return g.op(kind, inputs, parse_attrs(kind, attrs));
           }, py::arg("kind"), py::arg("inputs"), py::arg("attrs") = py::dict())
      .def("gradients", &Graph::gradients, py::arg("loss"), py::arg("wrt"))
      .def("shape", [](const Graph& g, int id) { return to_tuple(g.node(id).shape); })
      .def("dtype", [](const Graph& g, int id) { return std::string(dtype_name(g.node(id).dtype)); })
      .def("op_name", [](const Graph& g, int id) { return std::string(op_name(g.node(id).op)); })
      .def("inputs_of", [](const Graph& g, int id) { return g.node(id).inputs; })
      .def("__len__", &Graph::size);

  py::class_<Engine>(m, "Engine")
      .def(py::init([](const Graph& graph, uint64_t seed, const std::string& backend, const py::dict& options) {
             return std::make_unique<Engine>(graph, seed, backend, backend_options(options));
           }),
           py::arg("graph"), py::arg("seed") = 0, py::arg("backend") = "cpu", py::arg("options") = py::dict())
      .def("define", &Engine::define, py::arg("name"), py::arg("inputs"), py::arg("outputs"),
           py::arg("effects") = std::vector<int>{}, py::arg("advance_rng") = false)
      .def("has_function", &Engine::has_function)
      .def("run", &run, py::arg("name"), py::arg("arrays"))
      // describe("train", 32) or describe("train", 32, {"seq": 128}).
      .def("describe", [](Engine& e, const std::string& name, int64_t batch, const py::dict& symbols) {
             SymbolBinding binding{batch};
             for (auto item : symbols) {
               const auto index = static_cast<size_t>(-dim_symbol(py::str(item.first)) - 1);
               if (binding.size() <= index) binding.resize(index + 1, 1);
               binding[index] = item.second.cast<int64_t>();
             }
             py::gil_scoped_release release;
             std::lock_guard<std::mutex> lock(e.mutex());
             return e.describe(name, binding);
           }, py::arg("name"), py::arg("batch"), py::arg("symbols") = py::dict())
      .def("variable_names", &Engine::variable_names)
      .def("backend_info", [](const Engine& e) {
        py::dict d;
        for (const auto& [key, value] : e.backend_info()) d[key.c_str()] = value;
        return d;
      })
      .def("variable_shape", [](const Engine& e, const std::string& n) { return to_tuple(e.variable_shape(n)); })
      // Reads and writes of engine state take the engine's lock, as a step does, so they never
      // see or make half a step. The GIL is released first: a step holds the lock while it
      // converts its outputs, which needs the GIL.
      .def("get_variable", [](Engine& e, const std::string& name) {
        const Shape s = e.variable_shape(name);
        py::array out(numpy_dtype(e.variable_dtype(name)), std::vector<py::ssize_t>(s.begin(), s.end()));
        void* dst = out.mutable_data();
        locked(e, [&] { e.get_variable(name, dst); });
        return out;
      })
      .def("variable_dtype", [](const Engine& e, const std::string& n) { return std::string(dtype_name(e.variable_dtype(n))); })
      // The value is converted to the variable's dtype, as NumPy's asarray does.
      .def("set_variable", [](Engine& e, const std::string& name, py::object value) {
        const DType dtype = e.variable_dtype(name);
        const py::array a = as_engine_array(value, dtype);
        const Shape shape(a.shape(), a.shape() + a.ndim());
        const void* src = a.data();
        locked(e, [&] { e.set_variable(name, src, shape, dtype); });
      })
      .def("set_scalar", [](Engine& e, const std::string& name, float value) {
        locked(e, [&] { e.set_scalar(name, value); });
      })
      .def("get_scalar", [](Engine& e, const std::string& name) {
        float value = 0.0f;
        locked(e, [&] { value = e.get_scalar(name); });
        return value;
      })
      .def_property("rng_step",
          [](Engine& e) {
            uint64_t step = 0;
            locked(e, [&] { step = e.rng_step(); });
            return step;
          },
          [](Engine& e, uint64_t step) { locked(e, [&] { e.set_rng_step(step); }); })
      .def_property_readonly("seed", &Engine::seed)
      .def("stats", [](Engine& e) {
        EngineStats s;
        locked(e, [&] { s = e.stats(); });
        py::dict d;
        d["arena_bytes"] = s.arena_bytes;
        d["persistent_bytes"] = s.persistent_bytes;
        d["allocations"] = s.allocations;
        d["steps"] = s.steps;
        d["plans"] = s.plans;
        return d;
      });

  m.def("set_num_threads", &set_num_threads, py::arg("threads"));
  m.def("get_num_threads", &get_num_threads);
  m.def("set_sample_tiling", &set_sample_tiling, py::arg("enabled"));
  m.def("sample_tiling", &sample_tiling);
  m.def("blas_info", &blas_info);
  m.def("op_names", &op_names, "Every primitive a graph can hold, in the engine's op order.");
  m.def("dim_symbol", &dim_symbol, py::arg("name"), "The (negative) dim standing for the symbol `name`.");
  m.def("symbol_name", &symbol_name, py::arg("symbol"), "The name of a symbolic dim.");
  m.def("op_info", &op_info, py::arg("name"), "The registry entry of an op: arity, attrs, gradient, traits.");
  m.def("metal_available", &metal_available);
  bind_distributed(m);
  m.def("random_uniform", [](uint64_t seed, uint32_t stream, const Shape& shape) {
    for (int64_t d : shape)
      if (d < 0) throw py::value_error("[random_uniform] shape dims must be >= 0, got " + shape_str(shape));
    const std::vector<float> v = random_uniform(seed, stream, numel(shape));
    py::array_t<float> out(std::vector<py::ssize_t>(shape.begin(), shape.end()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
  }, py::arg("seed"), py::arg("stream"), py::arg("shape"));
}
