// OpenAI's CLIP, whole: Model (load a converted file, encode_image / encode_text / logits),
// the converter from published checkpoints (convert_checkpoint), the BPE tokenizer, and image
// loading with CLIP's preprocessing (ga/io/preprocess.hpp, which compiles stb_image into the
// including translation unit). Include this to use CLIP; it brings in the engine below it.
#pragma once
#include "../io/preprocess.hpp"
#include "config.hpp"
#include "convert.hpp"
#include "model.hpp"
#include "tokenizer.hpp"
