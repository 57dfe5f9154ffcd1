// The backward pass: walks the nodes recorded on the tape in reverse topological
// order, calls each gradient rule once with the summed gradient of its output, and
// accumulates into the .grad() of leaves. It runs ops itself (accumulation, summing
// a broadcast gradient down), so it sits above ops/ while tape.hpp sits below.
#pragma once
#include <unordered_map>
#include <vector>

#include "../ops/reduce.hpp"
#include "tape.hpp"

namespace ga::autograd {

namespace detail {
/// Brings a gradient to its input's shape (undoing broadcast) and checks it fits.
inline Tensor fit_grad(const Node& node, size_t i, const Tensor& g) {
  const Edge& e = node.inputs[i];
  GA_CHECK(g.dtype() == e.dtype, AutogradError, "backward of ", node.op, ": gradient ", i, " is ",
           dtype_name(g.dtype()), ", input was ", dtype_name(e.dtype));
  if (g.shape() == e.shape) return g;
  bool fits = e.shape.size() <= g.shape().size();
  for (size_t k = 0; fits && k < e.shape.size(); ++k) {  // e.shape must broadcast to g's shape
    const int64_t have = e.shape[e.shape.size() - 1 - k], want = g.shape()[g.shape().size() - 1 - k];
    fits = have == want || have == 1;
  }
  GA_CHECK(fits, AutogradError, "backward of ", node.op, ": gradient ", i, " has shape ", shape_str(g.shape()),
           ", input was ", shape_str(e.shape));
  return sum_to(g, e.shape);
}
inline void accumulate(Tensor& slot, const Tensor& g) { slot = slot.defined() ? add(slot, g) : g; }
}  // namespace detail

/// Back-propagates `grad_output` (ones for a 1-element root when undefined) from `root`.
/// Frees the graph's saved tensors unless retain_graph.
inline void backward(const Tensor& root, const Tensor& grad_output = Tensor(), bool retain_graph = false) {
  GA_CHECK(root.defined(), AutogradError, "backward: undefined tensor");
  GA_CHECK(root.requires_grad(), AutogradError,
           "backward: tensor does not require grad (no input of the computation called requires_grad_())");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    GA_CHECK(root.numel() == 1, AutogradError, "backward: output of shape ", shape_str(root.shape()),
             " is not a scalar; pass a gradient of that shape");
    seed = ones(root.shape(), root.dtype(), root.device());
  } else {
    GA_CHECK(seed.shape() == root.shape(), AutogradError, "backward: gradient of shape ",
             shape_str(seed.shape()), " given for an output of shape ", shape_str(root.shape()));
    GA_CHECK(seed.dtype() == root.dtype(), AutogradError, "backward: gradient dtype ", dtype_name(seed.dtype()),
             " differs from the output's ", dtype_name(root.dtype()));
  }
  NoGradGuard no_grad;  // gradient rules run ops; none of that is recorded

  auto add_to_leaf = [](const std::shared_ptr<TensorImpl>& leaf, const Tensor& g) {
    // A fresh buffer: the leaf's grad must not alias any tensor the user or a rule holds.
    Tensor fresh = g.clone().contiguous();
    leaf->grad = leaf->grad ? add(Tensor(leaf->grad), fresh).impl_ptr() : fresh.impl_ptr();
  };
  if (root.is_leaf()) {
    add_to_leaf(root.impl_ptr(), seed);
    return;
  }

  // Count, for every reachable node, how many edges point at it (iterative DFS).
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{root.grad_fn().get()};
  pending[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->released)
      throw AutogradError(cat("backward: the graph through op '", n->op,
                              "' was already freed by an earlier backward; pass retain_graph=true to the "
                              "first backward to run backward twice"));
    for (const Edge& e : n->inputs) {
      if (!e.node) continue;
      auto it = pending.find(e.node.get());
      if (it == pending.end()) {
        pending[e.node.get()] = 1;
        stack.push_back(e.node.get());
      } else {
        ++it->second;
      }
    }
  }

  // Kahn's order: a node runs once every consumer has handed it its gradient.
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = seed;
  std::vector<std::shared_ptr<Node>> ready{root.grad_fn()};
  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.back();
    ready.pop_back();
    Tensor g = grads[node.get()];
    grads.erase(node.get());
    // A node no gradient reached (its consumers' rules all returned none) still runs through
    // the loop without calling its rule, so that its inputs' pending counts reach zero.
    std::vector<Tensor> in_grads(node->inputs.size());
    if (g.defined()) {
      std::vector<bool> needs(node->inputs.size());
      for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->inputs[i].defined();
      in_grads = node->backward(g, needs);
      GA_CHECK(in_grads.size() == node->inputs.size(), AutogradError, "backward of ", node->op,
               ": rule returned ", in_grads.size(), " gradients for ", node->inputs.size(), " inputs");
    }
    for (size_t i = 0; i < in_grads.size(); ++i) {
      const Edge& e = node->inputs[i];
      if (!e.defined()) continue;
      if (e.node) {
        if (in_grads[i].defined()) detail::accumulate(grads[e.node.get()], detail::fit_grad(*node, i, in_grads[i]));
        if (--pending[e.node.get()] == 0) ready.push_back(e.node);
      } else if (in_grads[i].defined()) {
        add_to_leaf(e.leaf, detail::fit_grad(*node, i, in_grads[i]));
      }
    }
    if (!retain_graph) {
      node->backward = nullptr;  // frees the saved tensors
      node->inputs.clear();      // and the rest of the graph behind this node
      node->released = true;
    }
  }
}

}  // namespace ga::autograd

namespace ga {
inline void Tensor::backward(const Tensor& grad_output, bool retain_graph) const {
  autograd::backward(*this, grad_output, retain_graph);
}
}  // namespace ga
