// Module: the unit models are built from, in libtorch's vocabulary. A module owns named
// parameters (trained), buffers (saved state that is not trained, such as batch-norm
// running statistics) and child modules. Names join with dots ("layers.0.weight") in
// registration order, which is the order state dicts, optimizers and checkpoints see.
#pragma once
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#if defined(__GNUG__)
#include <cxxabi.h>
#endif

#include "../tensor.hpp"

namespace ga::nn {

/// Tensors by name, kept in insertion order (a module's registration order). Lookups go
/// through a hash index so checkpoints with thousands of entries load in linear time.
class StateDict {
 public:
  using Entry = std::pair<std::string, Tensor>;

  StateDict() = default;
  StateDict(std::initializer_list<Entry> entries) {
    for (const Entry& e : entries) insert(e.first, e.second);
  }
  explicit StateDict(const std::map<std::string, Tensor>& m) {
    for (const auto& e : m) insert(e.first, e.second);
  }

  /// Adds a key that is not present yet. Throws KeyError on a duplicate, since two
  /// tensors under one name in a checkpoint is always a bug.
  void insert(const std::string& key, Tensor value) {
    GA_CHECK(index_.count(key) == 0, KeyError, "StateDict: duplicate key \"", key, "\"");
    index_.emplace(key, entries_.size());
    entries_.emplace_back(key, std::move(value));
  }
  /// Adds the key, or replaces its tensor in place (keeping its position).
  void set(const std::string& key, Tensor value) {
    auto it = index_.find(key);
    if (it == index_.end()) insert(key, std::move(value));
    else entries_[it->second].second = std::move(value);
  }
  /// Removes the key if present; returns whether it was.
  bool erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(it->second));
    index_.clear();
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
    return true;
  }
  bool contains(const std::string& key) const { return index_.count(key) != 0; }
  /// nullptr when absent.
  const Tensor* find(const std::string& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  /// Throws KeyError naming the key when absent.
  const Tensor& at(const std::string& key) const {
    const Tensor* t = find(key);
    GA_CHECK(t != nullptr, KeyError, "StateDict: no key \"", key, "\"");
    return *t;
  }
  Tensor& at(const std::string& key) { return const_cast<Tensor&>(static_cast<const StateDict&>(*this).at(key)); }

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    k.reserve(entries_.size());
    for (const Entry& e : entries_) k.push_back(e.first);
    return k;
  }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

/// What a non-strict load_state_dict skipped.
struct LoadResult {
  std::vector<std::string> missing_keys;     // in the module, not in the dict
  std::vector<std::string> unexpected_keys;  // in the dict, not in the module
};

namespace detail {
inline std::string demangle(const char* name) {
#if defined(__GNUG__)
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  if (status == 0 && p) return p.get();
#endif
  return name;
}

inline std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", \"" : "\"") + names[i] + "\"";
  return s;
}
}  // namespace detail

/// Base of every layer and model. Used through std::shared_ptr (children are shared
/// pointers), and not copyable: a copy would silently alias the parameters.
///
/// Parameters and buffers are Tensor handles: the module's registry and a subclass's
/// member (e.g. Linear::weight) hold the same tensor, so in-place updates (optimizers,
/// load_state_dict, to()) are seen by both. Assigning a new Tensor to the member does
/// not update the registry; update values in place instead.
class Module {
 public:
  using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
  using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The module's C++ type, with the "ga::nn::" prefix dropped ("Linear", "MyNet"), for messages.
  virtual std::string type_name() const {
    std::string n = detail::demangle(typeid(*this).name());
    const std::string prefix = "ga::nn::";
    if (n.compare(0, prefix.size(), prefix) == 0) n = n.substr(prefix.size());
    return n;
  }

  /// The one-input forward that Sequential chains. Modules with another signature (for
  /// example attention's (q, k, v, mask)) define that instead; calling this one on them
  /// throws an Error naming the type.
  virtual Tensor forward(const Tensor& x) {
    (void)x;
    throw Error(cat(type_name(), ": forward(const Tensor&) is not implemented by this module"));
  }
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- registration ----

  /// Registers a trained tensor and marks it requires_grad (unless `requires_grad` is
  /// false: frozen but still saved). A non-leaf is detached first, so a parameter is
  /// always a leaf that optimizers may update in place. Returns the registered handle;
  /// store it in the member. Names are non-empty, dot-free and unique within the module.
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true) {
    check_new_name("register_parameter", name);
    GA_CHECK(t.defined(), ValueError, type_name(), ": register_parameter(\"", name, "\") got an undefined tensor");
    if (!t.is_leaf()) t = t.detach();
    t.requires_grad_(requires_grad);
    params_.emplace_back(name, t);
    return t;
  }
  /// Registers state that is saved and loaded but not trained (never requires grad).
  Tensor register_buffer(const std::string& name, Tensor t) {
    check_new_name("register_buffer", name);
    GA_CHECK(t.defined(), ValueError, type_name(), ": register_buffer(\"", name, "\") got an undefined tensor");
    if (t.requires_grad()) t = t.detach();
    buffers_.emplace_back(name, t);
    return t;
  }
  /// Registers a child; its parameters appear as "name.<param>". Returns the child as given.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check_new_name("register_module", name);
    GA_CHECK(m != nullptr, ValueError, type_name(), ": register_module(\"", name, "\") got a null module");
    children_.emplace_back(name, std::static_pointer_cast<Module>(m));
    return m;
  }

  // ---- traversal (registration order; children after the module's own tensors) ----

  /// Parameters with dotted names. A tensor registered under several names (tied
  /// weights) appears once, under its first name, so optimizers update it once.
  NamedTensors named_parameters(bool recurse = true) const {
    NamedTensors out;
    std::unordered_set<const TensorImpl*> seen;
    visit_tensors(&Module::params_, "", recurse, [&](const std::string& n, const Tensor& t) {
      if (seen.insert(t.unsafe_impl()).second) out.emplace_back(n, t);
    });
    return out;
  }
  std::vector<Tensor> parameters(bool recurse = true) const { return values(named_parameters(recurse)); }
  NamedTensors named_buffers(bool recurse = true) const {
    NamedTensors out;
    visit_tensors(&Module::buffers_, "", recurse, [&](const std::string& n, const Tensor& t) { out.emplace_back(n, t); });
    return out;
  }
  std::vector<Tensor> buffers(bool recurse = true) const { return values(named_buffers(recurse)); }
  const NamedModules& named_children() const { return children_; }
  /// Every descendant (not this module itself), depth first, with dotted names.
  NamedModules named_modules() {
    NamedModules out;
    collect_modules("", nullptr, out);
    return out;
  }
  /// Elements in all parameters (tied ones counted once).
  int64_t num_parameters() const {
    int64_t n = 0;
    for (const auto& p : named_parameters()) n += p.second.numel();
    return n;
  }

  // ---- state ----

  /// Every parameter and buffer by dotted name (tied tensors under each of their names),
  /// as detached views sharing the module's storage: save them, do not write through them.
  StateDict state_dict() const {
    StateDict d;
    for_each_state("", [&](const std::string& n, const Tensor& t, const Module&, const std::string&) {
      d.insert(n, t.detach());
    });
    return d;
  }

  /// Copies each dict entry into the module's tensor of the same name (values converted
  /// to the module's dtype and device; the module's tensors keep their identity).
  ///
  /// Checks everything before copying anything, so a failed load leaves the module as it
  /// was. Throws KeyError when `strict` and some keys are missing or unexpected, or
  /// ShapeError when only shapes disagree (shapes are checked even when not strict); the
  /// message lists every missing key, every unexpected key, and every mis-shaped entry
  /// with both shapes. Without `strict`, returns what was skipped.
  LoadResult load_state_dict(const StateDict& dict, bool strict = true) {
    LoadResult r;
    std::vector<std::string> mismatched;
    std::vector<std::pair<Tensor, Tensor>> copies;  // destination, source
    std::unordered_set<std::string> own;
    for_each_state("", [&](const std::string& n, const Tensor& t, const Module& owner, const std::string& local) {
      own.insert(n);
      const Tensor* src = dict.find(n);
      if (src == nullptr) {
        if (!owner.is_optional_state(local)) r.missing_keys.push_back(n);
      } else if (!src->defined()) {
        mismatched.push_back(cat("\"", n, "\": model ", shape_str(t.shape()), ", checkpoint has an undefined tensor"));
      } else if (src->shape() != t.shape()) {
        mismatched.push_back(cat("\"", n, "\": model ", shape_str(t.shape()), ", checkpoint ", shape_str(src->shape())));
      } else {
        copies.emplace_back(t, *src);
      }
    });
    for (const auto& e : dict)
      if (own.count(e.first) == 0) r.unexpected_keys.push_back(e.first);

    const bool key_error = strict && (!r.missing_keys.empty() || !r.unexpected_keys.empty());
    if (key_error || !mismatched.empty()) {
      std::string msg = cat("load_state_dict: error(s) loading into ", type_name(), ":");
      if (strict && !r.missing_keys.empty())
        msg += cat("\n  ", r.missing_keys.size(), " missing key(s): ", detail::quoted_list(r.missing_keys));
      if (strict && !r.unexpected_keys.empty())
        msg += cat("\n  ", r.unexpected_keys.size(), " unexpected key(s): ", detail::quoted_list(r.unexpected_keys));
      if (!mismatched.empty()) {
        msg += cat("\n  ", mismatched.size(), " shape mismatch(es):");
        for (const std::string& m : mismatched) msg += "\n    " + m;
      }
      if (key_error) throw KeyError(msg);
      throw ShapeError(msg);
    }
    NoGradGuard no_grad;
    for (auto& c : copies) c.first.copy_(c.second);
    return r;
  }

  // ---- modes ----

  /// Sets training mode here and in every descendant (dropout, batch norm read it).
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& c : children_) c.second->train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Drops every parameter's gradient (PyTorch's set_to_none=True).
  void zero_grad() {
    for (Tensor& p : parameters()) p.zero_grad();
  }
  /// Marks every parameter as trained or frozen (frozen ones get no gradient).
  void requires_grad_(bool on = true) {
    for (Tensor& p : parameters()) p.requires_grad_(on);
  }

  /// Converts every floating parameter and buffer to `dt` in place: the tensors keep
  /// their identity (members and optimizers still refer to them) but get new storage,
  /// and gradients are dropped. Views taken earlier keep the old values, and tensors
  /// tied by sharing storage (not by being the same tensor) are untied. A parameter that
  /// requires grad can only become f32 or f64. Convert before building an optimizer: its
  /// state (momentum, moments) keeps the dtype and device the parameters had then.
  void to(DType dt) {
    GA_CHECK(is_floating(dt), DTypeError, type_name(), ".to: target dtype ", dtype_name(dt), " is not floating");
    NoGradGuard no_grad;
    for_each_state("", [&](const std::string& n, const Tensor& t, const Module&, const std::string&) {
      if (!is_floating(t.dtype()) || t.dtype() == dt) return;
      GA_CHECK(!t.requires_grad() || dt == DType::f32 || dt == DType::f64, DTypeError, type_name(), ".to: \"", n,
               "\" requires grad and cannot become ", dtype_name(dt));
      replace_data(t, t.detach().to(dt));
    });
  }
  /// Moves every parameter and buffer to device `d` in place (as to(DType)).
  void to(Device d) {
    NoGradGuard no_grad;
    for_each_state("", [&](const std::string&, const Tensor& t, const Module&, const std::string&) {
      if (t.device() != d) replace_data(t, t.detach().to(d));
    });
  }

 protected:
  /// A state entry (local name) that load_state_dict may find absent without calling it
  /// missing, for entries older checkpoints lack (batch norm's num_batches_tracked).
  virtual bool is_optional_state(const std::string& local_name) const {
    (void)local_name;
    return false;
  }

 private:
  void check_new_name(const char* what, const std::string& name) const {
    GA_CHECK(!name.empty() && name.find('.') == std::string::npos, ValueError, type_name(), ": ", what,
             ": name \"", name, "\" must be non-empty and contain no '.'");
    bool taken = false;
    for (const auto& p : params_) taken = taken || p.first == name;
    for (const auto& b : buffers_) taken = taken || b.first == name;
    for (const auto& c : children_) taken = taken || c.first == name;
    GA_CHECK(!taken, ValueError, type_name(), ": ", what, ": name \"", name, "\" is already registered");
  }

  static std::vector<Tensor> values(const NamedTensors& named) {
    std::vector<Tensor> v;
    v.reserve(named.size());
    for (const auto& p : named) v.push_back(p.second);
    return v;
  }

  template <class F>
  void visit_tensors(NamedTensors Module::*list, const std::string& prefix, bool recurse, const F& f) const {
    for (const auto& p : this->*list) f(prefix + p.first, p.second);
    if (!recurse) return;
    for (const auto& c : children_) c.second->visit_tensors(list, prefix + c.first + ".", true, f);
  }

  /// Parameters then buffers of each module, depth first: the state dict order. f gets the
  /// dotted name, the tensor, the owning module and the name local to it.
  template <class F>
  void for_each_state(const std::string& prefix, const F& f) const {
    for (const auto& p : params_) f(prefix + p.first, p.second, *this, p.first);
    for (const auto& b : buffers_) f(prefix + b.first, b.second, *this, b.first);
    for (const auto& c : children_) c.second->for_each_state(prefix + c.first + ".", f);
  }

  void collect_modules(const std::string& name, const std::shared_ptr<Module>& self, NamedModules& out) {
    if (self) out.emplace_back(name, self);
    for (const auto& c : children_)
      c.second->collect_modules(name.empty() ? c.first : name + "." + c.first, c.second, out);
  }

  /// Points t's TensorImpl at src's data, so every handle to t sees the new data.
  static void replace_data(const Tensor& t, const Tensor& src) {
    Tensor c = src.contiguous();
    TensorImpl* impl = t.unsafe_impl();
    impl->storage = c.storage();
    impl->shape = c.shape();
    impl->strides = c.strides();
    impl->offset = c.offset();
    impl->dtype = c.dtype();
    impl->grad.reset();
  }

  NamedTensors params_;
  NamedTensors buffers_;
  NamedModules children_;
  bool training_ = true;
};

}  // namespace ga::nn
