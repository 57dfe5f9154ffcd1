// The `ga` command-line tool. Until the CLIP and adaptation commands land, it
// describes itself and checks the engine on a tiny training problem.
#include <cstring>
#include <iostream>

#include <ga/ga.hpp>

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::cout << "ga " << GA_VERSION_STRING << "\n";
  return 0;
}
