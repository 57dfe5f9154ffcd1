// The autograd tape: nodes that ops record as they run, and the grad mode switch.
//
// An op whose inputs require grad records one Node holding a backward function:
// given the gradient of the op's output, it returns one gradient per input (the
// rule written beside the op's forward in ops/). The engine (engine.hpp) walks
// these nodes in reverse topological order. Nodes hold only what backward needs:
// saved tensors are detached, so no node keeps its own output's node alive.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/core.hpp"

namespace ga::autograd {

struct Node;

/// Where an input's gradient goes: the node that produced it, or the leaf it is.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;  // the input's shape: the gradient must come back in it
  DType dtype = DType::f32;
  bool defined() const { return node || leaf; }
};

/// Gradients of the inputs given the gradient of the output. needs[i] says whether
/// input i wants one; a rule may return an undefined Tensor for inputs that do not.
/// A returned gradient may have a shape that broadcasts to the input's: the engine
/// sums it down (so binary ops need not).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad, const std::vector<bool>& needs)>;

struct Node {
  std::string op;
  std::vector<Edge> inputs;
  BackwardFn backward;
  bool released = false;  // set when a backward without retain_graph has run through it

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  /// Frees the chain of nodes behind this one iteratively: letting each Edge's shared_ptr
  /// destroy the next node would recurse once per node and overflow the stack on deep graphs.
  ~Node() {
    std::vector<std::shared_ptr<Node>> doomed;
    for (Edge& e : inputs)
      if (e.node) doomed.push_back(std::move(e.node));
    inputs.clear();
    while (!doomed.empty()) {
      std::shared_ptr<Node> n = std::move(doomed.back());
      doomed.pop_back();
      if (n.use_count() == 1) {  // the last owner: take its inputs before it dies
        for (Edge& e : n->inputs)
          if (e.node) doomed.push_back(std::move(e.node));
        n->inputs.clear();
      }
    }  // n dies here with no inputs left, so its destructor does not recurse
  }
};

namespace detail {
inline bool& grad_mode_flag() {
  static thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

/// Whether ops record onto the tape on this thread.
inline bool grad_enabled() { return detail::grad_mode_flag(); }

/// While alive, nothing is recorded and no graph is allocated (inference, optimizer steps).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(detail::grad_mode_flag()) { detail::grad_mode_flag() = false; }
  ~NoGradGuard() { detail::grad_mode_flag() = prev_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// True when recording is on and some input requires grad.
inline bool needs_record(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

namespace detail {
template <class It>
inline Tensor record_range(const char* op, It first, It last, Tensor out, BackwardFn fn) {
  if (!grad_enabled()) return out;
  bool any = false;
  for (It it = first; it != last; ++it) any = any || (it->defined() && it->requires_grad());
  if (!any) return out;
  auto node = std::make_shared<Node>();
  node->op = op;
  for (It it = first; it != last; ++it) {
    const Tensor& t = *it;
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) e.node = t.grad_fn();
      else e.leaf = t.impl_ptr();
      e.shape = t.shape();
      e.dtype = t.dtype();
    }
    node->inputs.push_back(std::move(e));
  }
  node->backward = std::move(fn);
  TensorImpl* o = out.unsafe_impl();
  o->grad_fn = std::move(node);
  o->requires_grad = true;
  return out;
}
}  // namespace detail

/// Records `op` producing `out` from `inputs` (in the order backward returns gradients),
/// when recording is on and some input requires grad; returns `out` either way.
inline Tensor record(const char* op, std::initializer_list<Tensor> inputs, Tensor out, BackwardFn fn) {
  return detail::record_range(op, inputs.begin(), inputs.end(), std::move(out), std::move(fn));
}
/// The same for a number of inputs known only at run time (concat, stack).
inline Tensor record(const char* op, const std::vector<Tensor>& inputs, Tensor out, BackwardFn fn) {
  return detail::record_range(op, inputs.begin(), inputs.end(), std::move(out), std::move(fn));
}

}  // namespace ga::autograd

namespace ga {
using autograd::NoGradGuard;
using autograd::grad_enabled;
}  // namespace ga
