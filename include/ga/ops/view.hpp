// Views (share storage, differentiable), copies, dtype/device conversion, element
// access and printing. A view's gradient rule maps the output gradient back to the
// input's geometry: reshape back, permute back, or scatter into zeros for slices.
#pragma once
#include <algorithm>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "factory.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(reshape, "view")
GA_REGISTER_OP(permute, "view")
GA_REGISTER_OP(slice, "view")
GA_REGISTER_OP(expand, "view")
GA_REGISTER_OP(contiguous, "view")
GA_REGISTER_OP(to_dtype, "view")

/// Resolves one -1 in a requested shape against numel. Throws ShapeError naming `op`.
inline Shape infer_shape(const char* op, const Shape& in, Shape s) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      GA_CHECK(infer < 0, ShapeError, op, ": more than one -1 in ", shape_str(s));
      infer = static_cast<int64_t>(i);
    } else {
      GA_CHECK(s[i] >= 0, ShapeError, op, ": invalid size in ", shape_str(s));
      known *= s[i];
    }
  }
  const int64_t n = numel_of(in);
  if (infer >= 0) {
    GA_CHECK(known != 0 && n % known == 0, ShapeError, op, ": cannot reshape ", shape_str(in), " into ",
             shape_str(s));
    s[infer] = n / known;
  }
  GA_CHECK(numel_of(s) == n, ShapeError, op, ": cannot reshape ", shape_str(in), " (", n, " elements) into ",
           shape_str(s));
  return s;
}
}  // namespace ops

inline Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), device());
  backend::of(*this).copy(*this, out);
  return autograd::record("contiguous", {*this}, out,
                          [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; });
}

inline Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  backend::of(*this).copy(*this, out);
  return autograd::record("clone", {*this}, out,
                          [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; });
}

namespace ops {
/// Strides under which `shape` / `strides` reads as `to` (same numel) without moving an
/// element, or false when no such strides exist. Each run of dims that lie back to back in
/// memory (each dim's stride is the run's innermost stride times the sizes inside it; dims
/// of size 1 join any run) can be regrouped freely, so `to` must regroup each run on its
/// own: for example [N, L, 3D] narrowed to its first D columns still splits into
/// [N, L, H, D / H].
inline bool view_strides(const Shape& shape, const Shape& strides, const Shape& to, Shape& out) {
  out.assign(to.size(), 0);
  if (numel_of(shape) == 0) {
    out = contiguous_strides(to);
    return true;
  }
  int64_t t = int64_t(to.size()) - 1;  // the next dim of `to` to give a stride, from the back
  int64_t d = int64_t(shape.size()) - 1;
  while (d >= 0) {
    // A run of dims [first, d] back to back in memory: run_numel elements from stride base.
    const int64_t base = strides[size_t(d)];
    int64_t run_numel = shape[size_t(d)], first = d;
    while (first > 0 && (shape[size_t(first - 1)] == 1 || strides[size_t(first - 1)] == base * run_numel)) {
      --first;
      run_numel *= shape[size_t(first)];
    }
    // Dims of `to` that make up the same run_numel elements, innermost first.
    int64_t to_numel = 1;
    while (t >= 0 && to_numel < run_numel) {
      out[size_t(t)] = to_numel * base;
      to_numel *= to[size_t(t)];
      --t;
    }
    if (to_numel != run_numel) return false;
    d = first - 1;
  }
  for (; t >= 0; --t) {  // what is left of `to` must be leading dims of size 1 (any stride)
    if (to[size_t(t)] != 1) return false;
    out[size_t(t)] = 1;
  }
  return true;
}
}  // namespace ops

inline Tensor Tensor::view(const Shape& s) const {
  const Shape ns = ops::infer_shape("view", shape(), s);
  Shape st;
  GA_CHECK(ops::view_strides(shape(), strides(), ns, st), ShapeError, "view: tensor of shape ", shape_str(shape()),
           " with strides ", shape_str(strides()), " cannot be read as ", shape_str(ns),
           " without a copy; use reshape() (which copies then) instead");
  Shape in_shape = shape();
  return autograd::record("reshape", {*this}, as_strided(ns, st, offset()),
                          [in_shape](const Tensor& g, const std::vector<bool>&) {
                            return std::vector<Tensor>{g.reshape(in_shape)};
                          });
}

/// A view when the elements can be read as shape s where they lie (ops::view_strides), else
/// a contiguous copy.
inline Tensor Tensor::reshape(const Shape& s) const {
  Shape st;
  if (is_contiguous() || ops::view_strides(shape(), strides(), ops::infer_shape("reshape", shape(), s), st))
    return view(s);
  return contiguous().view(s);
}

inline Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  const int64_t n = dim();
  GA_CHECK(static_cast<int64_t>(dims.size()) == n, ShapeError, "permute: ", dims.size(), " dims given for a ",
           n, "-d tensor of shape ", shape_str(shape()));
  Shape ns(n), nst(n);
  std::vector<int64_t> inverse(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t d = wrap_dim(dims[i], n, "permute");
    GA_CHECK(inverse[d] < 0, IndexError, "permute: dim ", d, " repeated");
    inverse[d] = i;
    ns[i] = shape()[d];
    nst[i] = strides()[d];
  }
  return autograd::record("permute", {*this}, as_strided(ns, nst, offset()),
                          [inverse](const Tensor& g, const std::vector<bool>&) {
                            return std::vector<Tensor>{g.permute(inverse)};
                          });
}

inline Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  if (dim() == 0) return *this;
  std::swap(p[d0], p[d1]);
  return permute(p);
}

inline Tensor Tensor::t() const {
  GA_CHECK(dim() >= 2, ShapeError, "t: needs at least 2 dims, got ", shape_str(shape()));
  return transpose(-2, -1);
}

inline Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  GA_CHECK(step > 0, ValueError, "slice: step must be positive, got ", step);
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape ns = shape(), nst = strides();
  ns[d] = (end - start + step - 1) / step;
  nst[d] *= step;
  Shape in_shape = shape();
  const DType dt = dtype();
  return autograd::record("slice", {*this}, as_strided(ns, nst, offset() + start * strides()[d]),
                          [in_shape, dt, d, start, end, step](const Tensor& g, const std::vector<bool>&) {
                            Tensor gx = zeros(in_shape, dt, g.device());
                            gx.slice(d, start, end, step).copy_(g);
                            return std::vector<Tensor>{gx};
                          });
}

inline Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  GA_CHECK(start >= 0 && length >= 0 && start + length <= n, IndexError, "narrow: range [", start, ", ",
           start + length, ") out of bounds for dim ", d, " of size ", n, " in ", shape_str(shape()));
  return slice(d, start, start + length);
}

inline Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t n = shape()[d];
  GA_CHECK(index >= -n && index < n, IndexError, "select: index ", index, " out of range for dim ", d,
           " of size ", n);
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

inline Tensor Tensor::expand(const Shape& s) const {
  GA_CHECK(s.size() >= shape().size(), ShapeError, "expand: cannot expand ", shape_str(shape()), " to ",
           shape_str(s));
  const size_t lead = s.size() - shape().size();
  Shape ns(s.size()), nst(s.size(), 0);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i < lead) {
      GA_CHECK(s[i] >= 0, ShapeError, "expand: invalid size in ", shape_str(s));
      ns[i] = s[i];
      continue;
    }
    const int64_t have = shape()[i - lead];
    const int64_t want = s[i] == -1 ? have : s[i];
    GA_CHECK(have == want || have == 1, ShapeError, "expand: cannot expand ", shape_str(shape()), " to ",
             shape_str(s));
    ns[i] = want;
    nst[i] = have == want ? strides()[i - lead] : 0;
  }
  // The engine sums a gradient down to its input's shape, so the rule is the identity.
  return autograd::record("expand", {*this}, as_strided(ns, nst, offset()),
                          [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; });
}

namespace ops {
/// x without the size-1 dims flagged in `drop`, as a view whatever x's strides (reshape
/// would copy a non-contiguous x, and select() relies on this staying a view).
inline Tensor squeeze_view(const Tensor& x, const std::vector<bool>& drop) {
  Shape s, st;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (drop[i]) continue;
    s.push_back(x.shape()[i]);
    st.push_back(x.strides()[i]);
  }
  Shape in_shape = x.shape();
  return autograd::record("reshape", {x}, x.as_strided(s, st, x.offset()),
                          [in_shape](const Tensor& g, const std::vector<bool>&) {
                            return std::vector<Tensor>{g.reshape(in_shape)};
                          });
}
}  // namespace ops

inline Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (dim() == 0 || shape()[d] != 1) return *this;
  std::vector<bool> drop(dim(), false);
  drop[d] = true;
  return ops::squeeze_view(*this, drop);
}
inline Tensor Tensor::squeeze() const {
  std::vector<bool> drop(dim(), false);
  for (int64_t i = 0; i < dim(); ++i) drop[i] = shape()[i] == 1;
  return ops::squeeze_view(*this, drop);
}
inline Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  s.insert(s.begin() + d, 1);
  // A size-1 dim can take any stride; reshape would copy non-contiguous input, so build the view.
  Shape st = strides();
  st.insert(st.begin() + d, d < dim() ? strides()[d] * shape()[d] : 1);
  Shape in_shape = shape();
  return autograd::record("reshape", {*this}, as_strided(s, st, offset()),
                          [in_shape](const Tensor& g, const std::vector<bool>&) {
                            return std::vector<Tensor>{g.reshape(in_shape)};
                          });
}
inline Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  GA_CHECK(start <= end, IndexError, "flatten: start_dim ", start, " after end_dim ", end);
  Shape s(shape().begin(), shape().begin() + start);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape()[i];
  s.push_back(m);
  s.insert(s.end(), shape().begin() + end + 1, shape().end());
  return reshape(s);
}

inline Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = empty(shape(), dt, device());
  backend::of(*this).copy(*this, out);
  if (!is_floating(dt) || !(dtype() == DType::f32 || dtype() == DType::f64)) return out;
  const DType in_dt = dtype();
  return autograd::record("to_dtype", {*this}, out, [in_dt](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.to(in_dt)};
  });
}

inline Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  // Across devices: through a contiguous host copy. Not recorded (no gradient across devices yet).
  Tensor src = contiguous();
  std::vector<char> host(static_cast<size_t>(numel()) * dtype_size(dtype()));
  backend::of(src).download(src, host.data());
  Tensor out = empty(shape(), dtype(), d);
  backend::of(out).upload(host.data(), out);
  return out;
}

inline Tensor& Tensor::copy_(const Tensor& src) {
  ops::check_defined("copy_", src);
  GA_CHECK(broadcast_shapes(src.shape(), shape(), "copy_") == shape(), ShapeError, "copy_: source ",
           shape_str(src.shape()), " does not broadcast to ", shape_str(shape()));
  Tensor s = src.device() == device() ? src : src.to(device());
  backend::of(*this).copy(s.detach().expand(shape()), *this);
  return *this;
}

inline Tensor& Tensor::fill_(double v) {
  backend::of(*this).fill(*this, v);
  return *this;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = detach().to(Device::cpu()).contiguous();
  const int64_t n = c.numel();
  std::vector<T> out(static_cast<size_t>(n));
  GA_DISPATCH_ALL(c.dtype(), "to_vector", {
    const scalar_t* p = static_cast<const scalar_t*>(c.raw_data());
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<scalar_t, half> || std::is_same_v<scalar_t, bfloat16>)
        out[i] = static_cast<T>(static_cast<float>(p[i]));
      else
        out[i] = static_cast<T>(p[i]);
    }
  });
  return out;
}

template <class T>
T Tensor::item() const {
  GA_CHECK(numel() == 1, ShapeError, "item: tensor of shape ", shape_str(shape()), " has ", numel(),
           " elements, not 1");
  return to_vector<T>()[0];
}

inline std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")\n";
  const std::vector<double> v = to_vector<double>();
  const Shape& s = shape();
  const Shape st = contiguous_strides(s);
  const int64_t edge = 3;  // elements shown at each end of a long dim
  os << std::setprecision(6);
  // Recursive excerpt: a dim longer than 2*edge shows its first and last `edge` entries.
  std::function<void(size_t, int64_t)> rec = [&](size_t d, int64_t base) {
    if (d == s.size()) {
      os << v[static_cast<size_t>(base)];
      return;
    }
    os << "[";
    const int64_t n = s[d];
    for (int64_t i = 0; i < n; ++i) {
      if (n > 2 * edge && i == edge) {
        os << (d + 1 == s.size() ? "..., " : "...,\n");
        i = n - edge - 1;
        continue;
      }
      rec(d + 1, base + i * st[d]);
      if (i + 1 < n) os << (d + 1 == s.size() ? ", " : ",\n");
    }
    os << "]";
  };
  if (numel() > 0 || s.empty()) rec(0, 0);
  else os << "[]";
  return os.str();
}

inline std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace ga
