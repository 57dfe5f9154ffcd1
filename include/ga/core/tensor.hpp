// Tensor: a cheap handle to a TensorImpl (shape, strides, offset, dtype, a shared
// Storage, and autograd state). Copying a Tensor copies the handle, as in PyTorch:
// both copies are the same tensor. Views are new TensorImpls over the same Storage.
//
// The members declared here that compute (views, math, backward, printing) are
// defined in ops/ and autograd/; include <ga/tensor.hpp> (or <ga/ga.hpp>) to use them.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "device.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "shape.hpp"
#include "storage.hpp"

namespace ga {

namespace autograd {
struct Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements; 0 for broadcast (expanded) dims
  int64_t offset = 0;  // in elements, from storage->data()
  DType dtype = DType::f32;

  // Autograd state. A leaf that requires grad accumulates into `grad`; a tensor made
  // by a recorded op points at the node that made it.
  bool requires_grad = false;
  std::shared_ptr<autograd::Node> grad_fn;
  std::shared_ptr<TensorImpl> grad;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- metadata (core) ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  /// Size of dimension d (negative d counts from the end).
  int64_t size(int64_t d) const {
    GA_CHECK(dim() > 0, IndexError, "size: a 0-d tensor has no dim ", d);
    return shape()[wrap_dim(d, dim(), "size")];
  }
  int64_t stride(int64_t d) const {
    GA_CHECK(dim() > 0, IndexError, "stride: a 0-d tensor has no dim ", d);
    return strides()[wrap_dim(d, dim(), "stride")];
  }
  int64_t numel() const { return numel_of(shape()); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  /// True when the elements are laid out row-major with no gaps (empty and 1-element
  /// tensors always are).
  bool is_contiguous() const {
    const Shape& s = shape();
    const Shape& st = strides();
    int64_t expect = 1;
    for (size_t i = s.size(); i-- > 0;) {
      if (s[i] == 0) return true;
      if (s[i] != 1 && st[i] != expect) return false;
      expect *= s[i];
    }
    return true;
  }
  /// Whether two tensors share the same storage (either may be a view).
  bool shares_storage_with(const Tensor& o) const { return storage() == o.storage(); }
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  /// Pointer to this tensor's first element. Requires T to match the dtype.
  template <class T>
  T* data_ptr() const {
    GA_CHECK(dtype_of<T>() == dtype(), DTypeError, "data_ptr: tensor is ", dtype_name(dtype()),
             ", asked for ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const {
    return static_cast<char*>(impl().storage->data()) +
           impl().offset * static_cast<int64_t>(dtype_size(dtype()));
  }

  /// A view with the given geometry over the same storage, with no autograd link.
  /// Requires the geometry to stay inside the storage (checked).
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
    GA_CHECK(shape.size() == strides.size(), ShapeError, "as_strided: shape ", shape_str(shape),
             " and strides ", shape_str(strides), " differ in rank");
    check_shape_valid(shape, "as_strided");
    int64_t lo = offset, hi = offset;
    bool empty = false;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == 0) empty = true;
      const int64_t span = (shape[i] - 1) * strides[i];
      (span < 0 ? lo : hi) += span;
    }
    const int64_t cap = static_cast<int64_t>(storage()->nbytes() / dtype_size(dtype()));
    GA_CHECK(empty || (lo >= 0 && hi < cap), IndexError, "as_strided: view ", shape_str(shape),
             " with strides ", shape_str(strides), " at offset ", offset,
             " reaches outside a storage of ", cap, " elements");
    auto v = std::make_shared<TensorImpl>();
    v->storage = storage();
    v->shape = shape;
    v->strides = strides;
    v->offset = offset;
    v->dtype = dtype();
    return Tensor(v);
  }

  // ---- autograd state (core) ----
  bool requires_grad() const { return impl().requires_grad; }
  /// Marks a leaf as needing a gradient. Only floating tensors can.
  Tensor& requires_grad_(bool on = true) {
    GA_CHECK(!on || dtype() == DType::f32 || dtype() == DType::f64, DTypeError,
             "requires_grad_: only f32 and f64 tensors can require gradients, got ",
             dtype_name(dtype()));
    GA_CHECK(is_leaf() || on, AutogradError,
             "requires_grad_(false) on a non-leaf tensor; use detach() instead");
    impl().requires_grad = on;
    return *this;
  }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  /// The accumulated gradient; undefined until a backward reaches this leaf.
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  /// Drops the accumulated gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad() { impl().grad.reset(); }
  /// The same data, cut from the graph: no grad_fn, not requiring grad.
  Tensor detach() const { return as_strided(shape(), strides(), offset()); }

  // ---- defined in autograd/engine.hpp ----
  /// Back-propagates from this tensor. A non-scalar needs `grad_output` of its shape.
  void backward(const Tensor& grad_output = Tensor(), bool retain_graph = false) const;

  // ---- defined in ops/ (views share storage and are differentiable) ----
  Tensor reshape(const Shape& s) const;
  Tensor view(const Shape& s) const;  // like reshape, but never copies (throws instead)
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // transpose of the last two dims
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& s) const;
  Tensor squeeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dt) const;
  Tensor to(Device d) const;
  Tensor cpu() const { return to(Device::cpu()); }
  /// Copies src (broadcast to this shape, any dtype) into this tensor's elements. Not recorded.
  Tensor& copy_(const Tensor& src);
  /// Sets every element to v. Not recorded.
  Tensor& fill_(double v);

  /// The single element of a 1-element tensor, converted to T.
  template <class T>
  T item() const;
  /// All elements in row-major order, converted to T.
  template <class T>
  std::vector<T> to_vector() const;
  std::string str() const;  // shape, dtype and an excerpt of the values

 private:
  TensorImpl& impl() const {
    GA_CHECK(impl_ != nullptr, ValueError, "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace ga
