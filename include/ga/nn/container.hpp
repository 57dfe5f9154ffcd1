// Sequential: modules applied one after another, named "0", "1", ... as in PyTorch, so
// that "layers.0.weight" in a checkpoint finds the first layer's weight.
#pragma once
#include <string>
#include <vector>

#include "module.hpp"

namespace ga::nn {

/// Chains one-input modules: forward(x) = m_{n-1}(... m_1(m_0(x))). Empty: the identity.
class Sequential : public Module {
 public:
  template <class... Ms>
  explicit Sequential(std::shared_ptr<Ms>... modules) {
    (push_back(std::move(modules)), ...);
  }
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules) {
    for (const auto& m : modules) push_back(m);
  }

  /// Appends m under the next index; returns it with its own type.
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    layers_.push_back(register_module(std::to_string(layers_.size()), m));
    return m;
  }

  size_t size() const { return layers_.size(); }
  bool empty() const { return layers_.empty(); }
  /// The i-th module. Throws IndexError when out of range.
  const std::shared_ptr<Module>& operator[](size_t i) const {
    GA_CHECK(i < layers_.size(), IndexError, "Sequential: index ", i, " out of range for ", layers_.size(),
             " modules");
    return layers_[i];
  }
  /// The i-th module as M. Throws ValueError naming both types when it is not an M.
  template <class M>
  std::shared_ptr<M> at(size_t i) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[i]);
    GA_CHECK(m != nullptr, ValueError, "Sequential: module ", i, " is a ", (*this)[i]->type_name(),
             ", not a ", detail::demangle(typeid(M).name()));
    return m;
  }
  std::vector<std::shared_ptr<Module>>::const_iterator begin() const { return layers_.begin(); }
  std::vector<std::shared_ptr<Module>>::const_iterator end() const { return layers_.end(); }

  Tensor forward(const Tensor& x) override {
    Tensor y = x;
    for (const auto& m : layers_) y = m->forward(y);
    return y;
  }

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace ga::nn
