// A user's program: includes <ga/ga.hpp> and <ga/clip/clip.hpp> (installed headers and their
// system dependencies, stb_image included, must be enough), runs a matmul + sum with autograd and a
// gradcheck, and checks the values. The first block is the README's quick example,
// verbatim: keep them in sync.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <vector>

#include <ga/clip/clip.hpp>
#include <ga/ga.hpp>

namespace {
int failures = 0;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "consumer: FAILED: %s\n", what);
    ++failures;
  }
}
bool all_equal(const std::vector<float>& v, const std::vector<float>& want) {
  if (v.size() != want.size()) return false;
  for (size_t i = 0; i < v.size(); ++i)
    if (std::abs(v[i] - want[i]) > 1e-5f) return false;
  return true;
}
}  // namespace

int main() {
  // ---- README quick example (begin) ----
  ga::Tensor a = ga::tensor({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();  // f32 [2, 3]
  ga::Tensor b = ga::ones({3, 2}).requires_grad_();
  ga::Tensor loss = ga::sum(ga::matmul(a, b));  // 42
  loss.backward();
  std::cout << loss << "\n" << a.grad() << "\n";  // a.grad() = ones(2, 2) @ b^T: all 2

  ga::Tensor v = a.t();                            // a view: shares a's storage
  ga::Tensor h = ga::mean(ga::relu(v - 2.5), {0});  // [2]: broadcasting, reductions over dims

  // Any composition can be checked against f64 central differences.
  ga::GradcheckResult r = ga::gradcheck(
      [](const std::vector<ga::Tensor>& x) { return ga::sum(ga::tanh(ga::matmul(x[0], x[1])) * ga::sum(x[0])); },
      {ga::randn({2, 3}), ga::randn({3, 4})});
  std::cout << "gradcheck " << (r.ok ? "ok" : r.message) << "\n";

  {
    ga::NoGradGuard no_grad;  // inference: nothing recorded
    ga::Tensor y = ga::matmul(a, b);
  }
  // ---- README quick example (end) ----

  check(std::abs(loss.item<float>() - 42.0f) < 1e-5f, "sum(a @ b) == 42");
  check(all_equal(a.grad().to_vector<float>(), {2, 2, 2, 2, 2, 2}), "a.grad() == 2");
  check(all_equal(b.grad().to_vector<float>(), {5, 5, 7, 7, 9, 9}), "b.grad() == a^T @ 1");
  check(v.shares_storage_with(a) && v.shape() == ga::Shape{3, 2}, "a.t() is a view");
  check(all_equal(h.to_vector<float>(), {0.5f / 3, 7.5f / 3}), "mean(relu(a^T - 2.5), 0)");
  check(h.shape() == ga::Shape{2}, "mean over dim 0 of [3, 2] is [2]");
  check(r.ok, "gradcheck");

  // The build options reach the consumer through ga::ga.
#ifdef _OPENMP
  const int has_openmp = 1;
#else
  const int has_openmp = 0;
#endif
  check(has_openmp == GA_EXPECT_OPENMP, "OpenMP as configured (GA_OPENMP)");
  check(ga::backend::cuda_compiled_in() == (GA_EXPECT_CUDA == 1), "CUDA as configured (GA_CUDA)");
  if (!has_openmp) check(ga::get_num_threads() == 1, "one thread without OpenMP");
  // Without a CUDA backend (or with only its seam), asking for a CUDA tensor is a clear DeviceError.
  bool threw = false;
  try {
    ga::zeros({2}, ga::f32, ga::Device::cuda(0));
  } catch (const ga::DeviceError& e) {
    threw = true;
    std::cout << "cuda:0 -> DeviceError: " << e.what() << "\n";
  }
  check(threw, "a CUDA tensor throws DeviceError while the CUDA backend is a seam");

  // CLIP through the umbrella header: a missing model file is an IOError naming it.
  threw = false;
  try {
    ga::clip::Model::load("no-such-model.safetensors", {ga::clip::WeightMode::Bf16});
  } catch (const ga::IOError& e) {
    threw = std::string(e.what()).find("no-such-model.safetensors") != std::string::npos;
  }
  check(threw, "ga::clip::Model::load of a missing file throws IOError naming it");

  if (failures) return 1;
  std::cout << "consumer ok\n";
  return 0;
}
