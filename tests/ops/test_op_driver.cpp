// The op test driver: runs every OpCase registered by the case files in this folder.
#include <doctest/doctest.h>

#include <set>

#include "driver.hpp"

namespace ga::test {
namespace {

enum class Layout { Contiguous, Transposed, Strided };
const char* layout_name(Layout l) {
  return l == Layout::Contiguous ? "contiguous" : l == Layout::Transposed ? "transposed" : "strided";
}

/// A float input as stored (a leaf) and the view the op sees.
struct Placed {
  Tensor storage;
  std::function<Tensor(const Tensor&)> view;
};

Placed place(const std::vector<double>& v, const Shape& s, DType dt, Layout l) {
  Tensor logical = tensor(v, s.empty() ? Shape{} : s).reshape(s).to(dt);
  if (l == Layout::Transposed && s.size() >= 2) {
    return {logical.transpose(-1, -2).contiguous(), [](const Tensor& t) { return t.transpose(-1, -2); }};
  }
  if (l == Layout::Strided && !s.empty()) {
    Shape wide = s;
    const int64_t n = s.back();
    wide.back() = 2 * n;
    Tensor st = zeros(wide, dt);
    st.slice(-1, 0, 2 * n, 2).copy_(logical);
    return {st, [n](const Tensor& t) { return t.slice(-1, 0, 2 * n, 2); }};
  }
  return {logical.contiguous(), [](const Tensor& t) { return t; }};
}

std::vector<double> draw(const InputSpec& spec, Generator& gen) {
  std::vector<double> v(static_cast<size_t>(numel_of(spec.shape)));
  for (double& x : v) {
    switch (spec.kind) {
      case InputSpec::Kind::Float:
        do x = gen.uniform(spec.lo, spec.hi);
        while (spec.away_from_zero && std::abs(x) < 0.1);
        break;
      case InputSpec::Kind::Index:
        x = spec.lo + double(gen.below(uint64_t(spec.hi - spec.lo)));
        break;
      case InputSpec::Kind::Bool:
        x = gen.uniform() < 0.5 ? 1.0 : 0.0;
        break;
    }
  }
  return v;
}

Tensor make_plain(const InputSpec& spec, const std::vector<double>& v) {
  const DType dt = spec.kind == InputSpec::Kind::Index ? spec.index_dtype : DType::b8;
  return tensor(v, spec.shape.empty() ? Shape{} : spec.shape).reshape(spec.shape).to(dt);
}

/// Max over elements of |y - ref| / (1 + |ref|); nan where shapes differ or only one side is nan.
double compare(const Tensor& y, const Ref& ref, std::string& where) {
  if (y.shape() != ref.shape) {
    where = "shape " + shape_str(y.shape()) + " vs reference " + shape_str(ref.shape);
    return NAN;
  }
  const std::vector<double> got = y.to_vector<double>();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = got[i], b = ref.v[i];
    if (std::isnan(a) && std::isnan(b)) continue;
    if (std::isinf(a) && a == b) continue;
    const double e = std::abs(a - b) / (1 + std::abs(b));
    if (!(e <= worst)) {
      worst = std::isnan(e) ? INFINITY : e;
      where = cat("element ", i, ": got ", a, ", reference ", b);
    }
  }
  return worst;
}

std::vector<Device> other_devices() {
  std::vector<Device> out;
  try {
    Device d = Device::cuda(0);
    (void)backend::get(d);
    out.push_back(d);
  } catch (const Error&) {
  }
  return out;
}

/// A seed from the case's op and name (FNV-1a: the same on every compiler), so that a case's
/// inputs do not change when cases are added or reordered.
uint64_t case_seed(const OpCase& c) {
  uint64_t h = 14695981039346656037ull;
  for (const std::string* s : {&c.op, &c.name}) {
    for (const unsigned char ch : *s) h = (h ^ ch) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // a separator: ("ab", "c") and ("a", "bc") differ
  }
  return h;
}

void run_case(const OpCase& c) {
  for (size_t set = 0; set < c.shapes.size(); ++set) {
    const std::vector<InputSpec>& specs = c.shapes[set];
    Generator gen(case_seed(c) + set);
    std::vector<std::vector<double>> values;
    std::string shapes_desc;
    for (const InputSpec& s : specs) {
      values.push_back(draw(s, gen));
      shapes_desc += shape_str(s.shape) + " ";
    }
    std::vector<Layout> layouts{Layout::Contiguous};
    if (c.layouts) layouts.insert(layouts.end(), {Layout::Transposed, Layout::Strided});
    for (DType dt : {DType::f32, DType::f64}) {
      // The reference sees the inputs as the op does: rounded to the dtype.
      std::vector<Ref> refs;
      for (size_t k = 0; k < specs.size(); ++k) {
        std::vector<double> r = values[k];
        if (dt == DType::f32 && specs[k].kind == InputSpec::Kind::Float)
          for (double& x : r) x = static_cast<float>(x);
        refs.emplace_back(specs[k].shape, r);
      }
      const Ref expected = c.reference(refs);
      for (Layout l : layouts) {
        INFO(std::string("op " + c.op + " (" + c.name + "), inputs " + shapes_desc + ", " + dtype_name(dt) + ", " + layout_name(l)));
        std::vector<Tensor> inputs;
        for (size_t k = 0; k < specs.size(); ++k)
          inputs.push_back(specs[k].kind == InputSpec::Kind::Float
                               ? [&] { Placed p = place(values[k], specs[k].shape, dt, l); return p.view(p.storage); }()
                               : make_plain(specs[k], values[k]));
        Tensor y;
        std::string where;
        try {
          y = c.fn(inputs);
        } catch (const std::exception& e) {
          FAIL_CHECK("threw: ", e.what());
          continue;
        }
        const double err = compare(y, expected, where);
        CHECK_MESSAGE(err <= (dt == DType::f32 ? c.f32_tol : c.f64_tol), "forward error ", err, " at ", where);

        for (Device d : other_devices()) {
          std::vector<Tensor> on_d;
          for (const Tensor& t : inputs) on_d.push_back(t.to(d));
          const Tensor yd = c.fn(on_d).to(Device::cpu());
          Ref cpu_ref(y.shape(), y.to_vector<double>());
          const double e2 = compare(yd, cpu_ref, where);
          CHECK_MESSAGE(e2 <= c.f32_tol, "device ", d.str(), " differs from cpu by ", e2, " at ", where);
        }

        if (dt != DType::f64 || !c.differentiable) continue;
        // Gradients: the leaves are the stored tensors; the views are part of fn.
        std::vector<Tensor> leaves;
        std::vector<std::function<Tensor(const Tensor&)>> views;
        std::vector<bool> wrt;
        for (size_t k = 0; k < specs.size(); ++k) {
          if (specs[k].kind == InputSpec::Kind::Float) {
            Placed p = place(values[k], specs[k].shape, dt, l);
            leaves.push_back(p.storage);
            views.push_back(p.view);
            wrt.push_back(specs[k].grad);
          } else {
            leaves.push_back(make_plain(specs[k], values[k]));
            views.push_back([](const Tensor& t) { return t; });
            wrt.push_back(false);
          }
        }
        auto fn = [&](const std::vector<Tensor>& xs) {
          std::vector<Tensor> in;
          for (size_t k = 0; k < xs.size(); ++k) in.push_back(views[k](xs[k]));
          return c.fn(in);
        };
        try {
          const GradcheckResult r = gradcheck(fn, leaves, c.fd_eps, c.grad_atol, c.grad_rtol, wrt);
          CHECK_MESSAGE(r.ok, "gradient: ", r.message);
        } catch (const std::exception& e) {
          FAIL_CHECK("gradient check threw: ", e.what());
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("op driver: every registered op has a case") {
  std::set<std::string> covered;
  for (const OpCase& c : cases()) covered.insert(c.op);
  for (const auto& [name, family] : ops::registry()) {
    INFO("op ", name, " (", family, ")");
    CHECK_MESSAGE(covered.count(name) == 1, "registered op '", name, "' has no case in tests/ops/");
  }
  for (const std::string& name : covered) {
    INFO("case op ", name);
    CHECK_MESSAGE(ops::registry().count(name) == 1, "case names op '", name, "' that is not registered");
  }
}

TEST_CASE("op driver: forward against naive f64, gradients against finite differences") {
  REQUIRE(!cases().empty());
  std::set<std::pair<std::string, std::string>> names;
  for (const OpCase& c : cases()) {
    CHECK_MESSAGE(names.emplace(c.op, c.name).second, "two cases of op '", c.op, "' are named '", c.name,
                  "': they would draw the same inputs");
    run_case(c);
  }
}

}  // namespace ga::test
