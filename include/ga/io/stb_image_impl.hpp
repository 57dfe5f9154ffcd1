// Private to ga/io: compiles stb_image (a system dependency, Debian's libstb-dev) into
// every translation unit that includes this header, with internal linkage.
//
// Why internal linkage: ga is header-only, so there is no .cpp of ours that could own
// the one definition stb normally wants (STB_IMAGE_IMPLEMENTATION in exactly one TU).
// With STB_IMAGE_STATIC every stb function is `static`, so each TU gets a private copy
// and the linker never sees duplicate symbols, whatever the number of TUs including
// ga/io/image.hpp. The cost is code size (one decoder per TU that decodes images), which
// is small next to the ODR and link-order trouble of any shared-definition scheme.
//
// Consequence for users: a TU that includes this header must not also include
// <stb_image.h> on its own (the declarations would be emitted as extern and static at
// once); such a TU can call the stbi_* functions declared here instead. Other TUs of
// the same program may use their own stb_image freely: nothing here is visible to them.
#pragma once

#if defined(STBI_INCLUDE_STB_IMAGE_H)
#error "ga/io/stb_image_impl.hpp: <stb_image.h> was already included in this translation unit; include ga/io headers first and use the stbi_* functions they declare (see the comment in this header)"
#endif

// Only the formats we promise: fewer decoders, less attack surface, and no format that
// stb would guess from arbitrary bytes (TGA has no signature).
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
// Files are read by ga::io (so errors name the file and paths are handled by C++).
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

// The implementation section of stb_image.h has no include guard of its own: keep the
// request from leaking into a later include in this TU.
#undef STB_IMAGE_IMPLEMENTATION
