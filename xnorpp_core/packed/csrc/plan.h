// A plan: the compiled steps of a whole packed network (xnorpp_core/packed/network.py) run one after another in
// one call, with no Python between them. Included by packed_conv.cpp, whose kernels its steps call.
//
// Plan(slots, out): values live in slots, the network's input in slot 0; run(x) returns slot out.
// add(kernel, args, inputs, outputs, frees): a step, the kernel of this module named kernel (pack_signs,
//     packed_conv, packed_conv_bits, max_pool_bits, max_pool_signs, channel_mean, int8_gemm, int8_conv) called with
//     args, every argument but the inputs converted once, here; each input (position, slot, view) is the value of
//     the slot seen as view gives it (AS_IS; NHWC: (N, H, W, C) contiguous from torch's (N, C, H, W); NCHW: the
//     reverse, channels-last; CHANNELS_LAST: the same shape, channels-last; ROWS: (N, 1, 1, K) from (N, K);
//     NHWC_VIEW: as NHWC, but a view, no copy: any strides),
//     at an argument that takes a tensor (its placeholder in args: None); each output (index, slot, shape) the
//     kernel's result index into the slot, viewed as shape when one is given (-1: the batch size). After the
//     step the slots of frees are emptied (their last reader has run), so that their memory goes back to the
//     allocator while it is still in cache. The module's plan_views names the views' numbers.

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace plan {

enum View : int64_t { AS_IS = 0, NHWC = 1, NCHW = 2, CHANNELS_LAST = 3, ROWS = 4, NHWC_VIEW = 5 };

inline torch::Tensor seen_as(const torch::Tensor& t, int64_t view) {
  switch (view) {
    case NHWC: return t.permute({0, 2, 3, 1}).contiguous();
    case NCHW: return t.permute({0, 3, 1, 2}).contiguous(at::MemoryFormat::ChannelsLast);
    case CHANNELS_LAST: return t.contiguous(at::MemoryFormat::ChannelsLast);
    case ROWS: return t.reshape({t.size(0), 1, 1, -1}).contiguous();
    case NHWC_VIEW: return t.permute({0, 2, 3, 1});
    default: return t;
  }
}

template <class T>
constexpr bool takes_tensor = std::is_same_v<T, torch::Tensor> || std::is_same_v<T, c10::optional<torch::Tensor>>;

inline std::vector<torch::Tensor> results(torch::Tensor t) { return {std::move(t)}; }
inline std::vector<torch::Tensor> results(std::vector<torch::Tensor> v) { return v; }

struct Input {
  int64_t position, slot, view;
};
struct Output {
  int64_t index, slot;
  std::vector<int64_t> shape;
};
using Env = std::vector<torch::Tensor>;
using StepFn = std::function<std::vector<torch::Tensor>(Env&)>;

// Argument I of a step: the input placed at it (a tensor argument), else nothing.
template <size_t I, class T>
void place(T& arg, const Input& in, const torch::Tensor& v) {
  if constexpr (takes_tensor<T>) {
    if (static_cast<int64_t>(I) == in.position) arg = v;
  }
}

// The step calling f with args, its inputs placed at their positions.
template <class R, class... A, size_t... I>
StepFn make_step(R (*f)(A...), const py::tuple& args, const std::vector<Input>& inputs, std::index_sequence<I...>) {
  constexpr bool tensor_at[] = {takes_tensor<std::decay_t<A>>...};
  TORCH_CHECK(args.size() == sizeof...(A), "Plan.add: ", sizeof...(A), " arguments expected, got ", args.size());
  std::vector<bool> is_input(sizeof...(A), false);
  for (const Input& in : inputs) {
    TORCH_CHECK(in.position >= 0 && in.position < static_cast<int64_t>(sizeof...(A)) && tensor_at[in.position],
                "Plan.add: input at argument ", in.position, ", which takes no tensor");
    TORCH_CHECK(in.view >= AS_IS && in.view <= NHWC_VIEW, "Plan.add: unknown view ", in.view);
    is_input[in.position] = true;
  }
  std::tuple<std::decay_t<A>...> fixed{
      (is_input[I] ? std::decay_t<A>{} : args[I].template cast<std::decay_t<A>>())...};
  return [f, fixed, inputs](Env& env) {
    auto call = fixed;  // the fixed arguments, the inputs placed in this call's copy
    for (const Input& in : inputs) {
      const torch::Tensor v = seen_as(env[in.slot], in.view);
      (place<I>(std::get<I>(call), in, v), ...);
    }
    return results(std::apply(f, std::move(call)));
  };
}

template <class R, class... A>
StepFn make_step(R (*f)(A...), const py::tuple& args, const std::vector<Input>& inputs) {
  return make_step(f, args, inputs, std::index_sequence_for<A...>{});
}

struct Plan {
  struct Step {
    StepFn run;
    std::vector<Output> outputs;
    std::vector<int64_t> frees;
  };
  int64_t slots, out;
  std::vector<Step> steps;

  Plan(int64_t slots, int64_t out) : slots(slots), out(out) {
    TORCH_CHECK(slots >= 1 && out >= 0 && out < slots, "Plan: out must be one of the slots");
  }

  void add(const std::string& kernel, const py::tuple& args,
           const std::vector<std::tuple<int64_t, int64_t, int64_t>>& ins,
           const std::vector<std::tuple<int64_t, int64_t, std::vector<int64_t>>>& outs,
           const std::vector<int64_t>& frees) {
    std::vector<Input> inputs;
    for (const auto& [position, slot, view] : ins) {
      TORCH_CHECK(slot >= 0 && slot < slots, "Plan.add: no slot ", slot);
      inputs.push_back({position, slot, view});
    }
    Step step;
    if (kernel == "pack_signs") step.run = make_step(&pack_signs, args, inputs);
    else if (kernel == "packed_conv") step.run = make_step(&packed_conv, args, inputs);
    else if (kernel == "packed_conv_bits") step.run = make_step(&packed_conv_bits, args, inputs);
    else if (kernel == "max_pool_bits") step.run = make_step(&max_pool_bits, args, inputs);
    else if (kernel == "max_pool_signs") step.run = make_step(&max_pool_signs, args, inputs);
    else if (kernel == "channel_mean") step.run = make_step(&channel_mean, args, inputs);
    else if (kernel == "int8_gemm") step.run = make_step(&xnorpp::int8_gemm, args, inputs);
    else if (kernel == "int8_conv") step.run = make_step(&xnorpp::int8_conv, args, inputs);
    else TORCH_CHECK(false, "Plan.add: no kernel ", kernel);
    for (const auto& [index, slot, shape] : outs) {
      TORCH_CHECK(slot >= 0 && slot < slots, "Plan.add: no slot ", slot);
      step.outputs.push_back({index, slot, shape});
    }
    for (int64_t s : frees) TORCH_CHECK(s >= 0 && s < slots && s != out, "Plan.add: cannot free slot ", s);
    step.frees = frees;
    steps.push_back(std::move(step));
  }

  torch::Tensor run(const torch::Tensor& x) const {
    Env env(slots);
    env[0] = x;
    for (const Step& step : steps) {
      std::vector<torch::Tensor> r = step.run(env);
      for (const Output& o : step.outputs) {
        TORCH_CHECK(o.index < static_cast<int64_t>(r.size()), "Plan: a step has no result ", o.index);
        if (o.shape.empty()) {
          env[o.slot] = r[o.index];
          continue;
        }
        std::vector<int64_t> shape = o.shape;
        for (int64_t& d : shape) d = d == -1 ? x.size(0) : d;
        env[o.slot] = r[o.index].view(shape);
      }
      for (int64_t s : step.frees) env[s].reset();
    }
    return env[out];
  }
};

inline void bind_plan(py::module& m) {
  py::class_<Plan>(m, "Plan", py::module_local(), "a packed network's compiled steps, run in one call (csrc/plan.h)")
      .def(py::init<int64_t, int64_t>(), py::arg("slots"), py::arg("out"))
      .def("add", &Plan::add, py::arg("kernel"), py::arg("args"), py::arg("inputs"), py::arg("outputs"),
           py::arg("frees"))
      .def("run", &Plan::run, py::arg("x"));
  m.attr("plan_views") = py::dict(py::arg("as_is") = int64_t{AS_IS}, py::arg("nhwc") = int64_t{NHWC},
                                  py::arg("nchw") = int64_t{NCHW}, py::arg("channels_last") = int64_t{CHANNELS_LAST},
                                  py::arg("rows") = int64_t{ROWS}, py::arg("nhwc_view") = int64_t{NHWC_VIEW});
}

}  // namespace plan
