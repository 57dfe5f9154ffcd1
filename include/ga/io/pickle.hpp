// A restricted unpickler for the pickles inside PyTorch checkpoints (torch.save's data.pkl,
// torch.jit.save's data.pkl and constants.pkl). It never executes anything: it knows exactly
// the protocol-2 opcodes those writers emit and an allow-list of globals, each given a fixed,
// safe meaning; every other opcode or global is an IOError naming the file and the byte offset.
// The result is a plain value tree (arena-owned, so shared and even cyclic references are
// safe); interpreting tensors is left to torch_checkpoint.hpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace ga::io {

/// One unpickled value. Containers point at other values of the same Pickle (never owned).
struct PickleValue {
  enum class Kind : uint8_t {
    none, boolean, integer, floating, string, bytes,
    tuple, list, dict,
    global,         // a reference to an allowed global: module, name
    object,         // module.name called / instantiated: args, and state set by BUILD (may be null)
    persistent_id,  // BINPERSID: state is the id (for torch, a tuple naming a storage)
  };
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0;
  std::string text;                  // string (UTF-8 as written) or bytes
  std::string module, name;          // global / object: the class or function
  std::vector<PickleValue*> items;   // tuple / list elements; dict values; object args
  std::vector<PickleValue*> keys;    // dict keys, parallel to items (string or integer values)
  PickleValue* state = nullptr;      // object: BUILD state (its attributes); dict: BUILD state (an
                                     // OrderedDict's attributes, not items); persistent_id: the id

  bool is(Kind k) const { return kind == k; }
  /// "module.name" of a global or object.
  std::string qualified_name() const { return module + "." + name; }
  static const char* kind_name(Kind k) {
    switch (k) {
      case Kind::none: return "None";
      case Kind::boolean: return "bool";
      case Kind::integer: return "int";
      case Kind::floating: return "float";
      case Kind::string: return "str";
      case Kind::bytes: return "bytes";
      case Kind::tuple: return "tuple";
      case Kind::list: return "list";
      case Kind::dict: return "dict";
      case Kind::global: return "global";
      case Kind::object: return "object";
      case Kind::persistent_id: return "persistent id";
    }
    return "?";
  }
  const char* kind_name() const { return kind_name(kind); }
};

/// What a pickle may ask of the reader.
struct PickleOptions {
  /// Allow the classes and helpers of TorchScript archives: `__torch__.*` classes (plain
  /// objects holding their attributes) and torch.jit._pickle's list builders / type tags.
  bool torchscript = false;
  size_t max_values = size_t(1) << 22;     // values created, all kinds together
  size_t max_stack = size_t(1) << 20;      // values on the stack, across marks
  size_t max_marks = size_t(1) << 16;      // open MARKs
  size_t max_memo = size_t(1) << 20;       // memo indices (torch numbers them from 0)
  size_t max_container = size_t(1) << 24;  // elements of one tuple / list / dict
  size_t max_string = size_t(1) << 28;     // bytes of one string
};

/// The result of unpickling: owns every value.
class Pickle {
 public:
  const PickleValue& root() const { return *root_; }
  size_t value_count() const { return count_; }
  const std::string& origin() const { return origin_; }

 private:
  friend class Unpickler;
  // Values live in fixed blocks that never move, so containers can point at them.
  static constexpr size_t kBlock = 256;
  std::vector<std::unique_ptr<PickleValue[]>> blocks_;
  size_t count_ = 0;
  PickleValue* root_ = nullptr;
  std::string origin_;
};

/// The meaning the reader gives a global it allows.
enum class PickleGlobal {
  unknown,       // rejected
  type_ref,      // may only be referred to (torch.FloatStorage inside a storage id)
  new_dict,      // collections.OrderedDict(): an empty dict
  call_object,   // torch._utils._rebuild_*: an object holding its args, for the caller to interpret
  pass_list,     // torch.jit._pickle.build_*list(list): the list itself
  type_tag,      // torch.jit._pickle.restore_type_tag(value, type): the value
  encode_bytes,  // _codecs.encode(text, "latin1"): bytes (protocol 2 pickles bytes this way)
  empty_bytes,   // builtins.bytes(): b""
  script_class,  // __torch__.*: an object built by NEWOBJ () and BUILD (attributes)
};

/// Classifies module.name under `options`.
inline PickleGlobal classify_pickle_global(const std::string& module, const std::string& name,
                                           const PickleOptions& options) {
  if (module == "collections" && name == "OrderedDict") return PickleGlobal::new_dict;
  if (module == "torch._utils" &&
      (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state"))
    return PickleGlobal::call_object;
  // Storage classes are only ever named (inside a storage's persistent id); which ones hold
  // a dtype ga supports is the checkpoint reader's business, so that its error can name the
  // tensor.
  if (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0)
    return PickleGlobal::type_ref;
  if (module == "_codecs" && name == "encode") return PickleGlobal::encode_bytes;
  if ((module == "__builtin__" || module == "builtins") && name == "bytes") return PickleGlobal::empty_bytes;
  if (options.torchscript) {
    if (module == "torch.jit._pickle") {
      if (name == "build_intlist" || name == "build_tensorlist" || name == "build_doublelist" ||
          name == "build_boollist")
        return PickleGlobal::pass_list;
      if (name == "restore_type_tag") return PickleGlobal::type_tag;
    }
    if (module == "__torch__" || module.compare(0, 10, "__torch__.") == 0) return PickleGlobal::script_class;
  }
  return PickleGlobal::unknown;
}

/// Unpickles [data, data + size). `origin` names the file in messages. IOError on anything
/// outside the supported subset, any limit exceeded, or malformed input; never executes code.
inline Pickle unpickle(const uint8_t* data, size_t size, const std::string& origin,
                       const PickleOptions& options = {});

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, std::string origin, const PickleOptions& options)
      : p_(data), n_(size), opt_(options) {
    result_.origin_ = std::move(origin);
  }

  Pickle run() {
    bool stopped = false;
    while (!stopped) {
      if (pos_ >= n_) fail_at(pos_, "ends without a STOP opcode (truncated?)");
      op_pos_ = pos_;
      const uint8_t op = p_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t v = byte();
          if (v > 2)
            fail(cat("uses pickle protocol ", int(v), "; only protocol 2 (what torch.save and torch.jit.save "
                     "write) is supported"));
          break;
        }
        case '.':  // STOP
          if (!marks_.empty() || stack_.size() != 1) fail("STOP with an unbalanced stack");
          result_.root_ = stack_.back();
          stopped = true;
          break;
        case '(':  // MARK
          if (marks_.size() >= opt_.max_marks) fail(cat("more than ", opt_.max_marks, " nested MARKs"));
          marks_.push_back(stack_.size());
          break;
        case 'N': push(make(PickleValue::Kind::none)); break;
        case 0x88:    // NEWTRUE
        case 0x89: {  // NEWFALSE
          PickleValue* v = make(PickleValue::Kind::boolean);
          v->boolean = op == 0x88;
          push(v);
          break;
        }
        case 'K': push_int(byte()); break;  // BININT1
        case 'M': {                         // BININT2
          need(2);
          push_int(p_[pos_] | (p_[pos_ + 1] << 8));
          pos_ += 2;
          break;
        }
        case 'J': {  // BININT: signed 32-bit
          need(4);
          const uint32_t u = le32(pos_);
          pos_ += 4;
          push_int(static_cast<int32_t>(u));
          break;
        }
        case 0x8a: {  // LONG1: little-endian two's complement of n bytes
          const uint8_t len = byte();
          if (len > 8) fail(cat("integer of ", int(len), " bytes does not fit in 64 bits"));
          need(len);
          uint64_t u = 0;
          for (int i = 0; i < len; ++i) u |= uint64_t(p_[pos_ + i]) << (8 * i);
          if (len > 0 && len < 8 && (p_[pos_ + len - 1] & 0x80)) u |= ~uint64_t(0) << (8 * len);  // sign-extend
          pos_ += len;
          int64_t v;
          std::memcpy(&v, &u, 8);
          push_int(v);
          break;
        }
        case 'G': {  // BINFLOAT: big-endian IEEE double
          need(8);
          uint64_t u = 0;
          for (int i = 0; i < 8; ++i) u = (u << 8) | p_[pos_ + i];
          pos_ += 8;
          PickleValue* v = make(PickleValue::Kind::floating);
          std::memcpy(&v->floating, &u, 8);
          push(v);
          break;
        }
        case 'X': {  // BINUNICODE: 4-byte length, UTF-8
          need(4);
          const uint32_t len = le32(pos_);
          pos_ += 4;
          if (len > opt_.max_string) fail(cat("string of ", len, " bytes is longer than the limit of ", opt_.max_string));
          need(len);
          push(intern(std::string_view(reinterpret_cast<const char*>(p_ + pos_), len)));
          pos_ += len;
          break;
        }
        case ')': push(make(PickleValue::Kind::tuple)); break;  // EMPTY_TUPLE
        case 0x85:                                               // TUPLE1
        case 0x86:                                               // TUPLE2
        case 0x87: {                                             // TUPLE3
          const size_t k = static_cast<size_t>(op - 0x84);
          if (stack_.size() < base() + k) fail("tuple needs more values than the stack holds");
          PickleValue* t = make(PickleValue::Kind::tuple);
          t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(t);
          break;
        }
        case 't': {  // TUPLE: everything since the last mark
          std::vector<PickleValue*> items = pop_mark();
          PickleValue* t = make(PickleValue::Kind::tuple);
          t->items = std::move(items);
          push(t);
          break;
        }
        case ']': push(make(PickleValue::Kind::list)); break;  // EMPTY_LIST
        case '}': push(make(PickleValue::Kind::dict)); break;  // EMPTY_DICT
        case 'a': {                                             // APPEND
          PickleValue* v = pop();
          append(top(), {v});
          break;
        }
        case 'e': {  // APPENDS
          std::vector<PickleValue*> items = pop_mark();
          append(top(), items);
          break;
        }
        case 's': {  // SETITEM
          PickleValue* v = pop();
          PickleValue* k = pop();
          set_item(top(), k, v);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<PickleValue*> items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of values");
          PickleValue* d = top();
          for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
          break;
        }
        case 'c': global(); break;  // GLOBAL
        case 'R': {                 // REDUCE
          PickleValue* args = pop();
          PickleValue* fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          PickleValue* args = pop();
          PickleValue* cls = pop();
          push(new_object(cls, args));
          break;
        }
        case 'b': {  // BUILD
          PickleValue* st = pop();
          PickleValue* obj = top();
          // TorchScript objects take their attributes this way; an OrderedDict its __dict__
          // (torch's state_dict() carries `_metadata` so). Nothing else has a state to set.
          const bool script_object = obj->is(PickleValue::Kind::object) && classify(obj) == PickleGlobal::script_class;
          if (!script_object && !obj->is(PickleValue::Kind::dict))
            fail(cat("BUILD on a ", obj->kind_name(), obj->is(PickleValue::Kind::object) ? " " + obj->qualified_name() : "",
                     "; only TorchScript objects and OrderedDicts take a state"));
          if (obj->state) fail(cat("BUILD twice on the same ", obj->kind_name()));
          obj->state = st;
          break;
        }
        case 'Q': {  // BINPERSID
          PickleValue* pid = pop();
          PickleValue* v = make(PickleValue::Kind::persistent_id);
          v->state = pid;
          push(v);
          break;
        }
        case 'q': memo_put(byte()); break;  // BINPUT
        case 'r': {                          // LONG_BINPUT
          need(4);
          const uint32_t i = le32(pos_);
          pos_ += 4;
          memo_put(i);
          break;
        }
        case 'h': memo_get(byte()); break;  // BINGET
        case 'j': {                          // LONG_BINGET
          need(4);
          const uint32_t i = le32(pos_);
          pos_ += 4;
          memo_get(i);
          break;
        }
        default:
          fail(cat("unsupported pickle opcode ", opcode_name(op), " (torch checkpoints do not use it)"));
      }
    }
    if (pos_ != n_) fail_at(pos_, cat(n_ - pos_, " bytes after the STOP opcode"));
    return std::move(result_);
  }

 private:
  [[noreturn]] void fail_at(size_t at, const std::string& msg) const {
    throw IOError(cat(result_.origin_, ": pickle byte ", at, ": ", msg));
  }
  [[noreturn]] void fail(const std::string& msg) const { fail_at(op_pos_, msg); }

  static std::string opcode_name(uint8_t op) {
    static const char* hexd = "0123456789abcdef";
    std::string h = cat("0x", hexd[op >> 4], hexd[op & 15]);
    static const std::pair<uint8_t, const char*> names[] = {
        {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"}, {'F', "FLOAT"}, {'I', "INT"}, {'L', "LONG"},
        {'P', "PERSID"}, {'S', "STRING"}, {'T', "BINSTRING"}, {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"},
        {'d', "DICT"}, {'g', "GET"}, {'i', "INST"}, {'l', "LIST"}, {'o', "OBJ"}, {'p', "PUT"},
        {0x82, "EXT1"}, {0x83, "EXT2"}, {0x84, "EXT4"}, {0x8b, "LONG4"}, {'B', "BINBYTES"},
        {'C', "SHORT_BINBYTES"}, {0x8c, "SHORT_BINUNICODE"}, {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"},
        {0x8f, "EMPTY_SET"}, {0x90, "ADDITEMS"}, {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"},
        {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"}, {0x95, "FRAME"}, {0x96, "BYTEARRAY8"},
        {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"}};
    for (const auto& [code, name] : names)
      if (code == op) return cat(name, " (", h, ")");
    return h;
  }

  void need(size_t k) const {
    if (k > n_ - pos_) fail(cat("needs ", k, " more bytes, the pickle ends (truncated?)"));
  }
  uint8_t byte() {
    need(1);
    return p_[pos_++];
  }
  uint32_t le32(size_t at) const {
    return uint32_t(p_[at]) | (uint32_t(p_[at + 1]) << 8) | (uint32_t(p_[at + 2]) << 16) |
           (uint32_t(p_[at + 3]) << 24);
  }

  PickleValue* make(PickleValue::Kind k) {
    if (result_.count_ >= opt_.max_values) fail(cat("more than ", opt_.max_values, " values"));
    if (result_.count_ % Pickle::kBlock == 0) result_.blocks_.emplace_back(new PickleValue[Pickle::kBlock]);
    PickleValue* v = &result_.blocks_.back()[result_.count_ % Pickle::kBlock];
    ++result_.count_;
    v->kind = k;
    return v;
  }
  PickleValue* intern(std::string_view text) {
    auto it = strings_.find(text);
    if (it != strings_.end()) return it->second;
    PickleValue* v = make(PickleValue::Kind::string);
    v->text.assign(text.data(), text.size());
    strings_.emplace(std::string_view(v->text), v);  // the arena never moves v->text
    return v;
  }
  void push_int(int64_t i) {
    PickleValue* v = make(PickleValue::Kind::integer);
    v->integer = i;
    push(v);
  }
  void push(PickleValue* v) {
    if (stack_.size() >= opt_.max_stack) fail(cat("stack deeper than ", opt_.max_stack, " values"));
    stack_.push_back(v);
  }
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  PickleValue* pop() {
    if (stack_.size() <= base()) fail("pops a value from an empty stack");
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() const {
    if (stack_.size() <= base()) fail("needs a value on an empty stack");
    return stack_.back();
  }
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) fail("needs a MARK, none is open");
    const size_t m = marks_.back();
    marks_.pop_back();
    if (stack_.size() - m > opt_.max_container)
      fail(cat("container of ", stack_.size() - m, " values is larger than the limit of ", opt_.max_container));
    std::vector<PickleValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  void append(PickleValue* list, const std::vector<PickleValue*>& items) {
    if (!list->is(PickleValue::Kind::list)) fail(cat("appends to a ", list->kind_name(), ", not a list"));
    if (items.size() > opt_.max_container - list->items.size())
      fail(cat("list larger than the limit of ", opt_.max_container, " values"));
    list->items.insert(list->items.end(), items.begin(), items.end());
  }

  void set_item(PickleValue* dict, PickleValue* key, PickleValue* value) {
    if (!dict->is(PickleValue::Kind::dict)) fail(cat("sets an item on a ", dict->kind_name(), ", not a dict"));
    DictKey k{dict, 0, key->is(PickleValue::Kind::string)};
    if (k.is_string) {
      k.key = reinterpret_cast<uintptr_t>(key);  // strings are interned: equal text, same value
    } else if (key->is(PickleValue::Kind::integer)) {
      std::memcpy(&k.key, &key->integer, 8);
    } else {
      fail(cat("dict key of type ", key->kind_name(), " (only str and int keys are supported)"));
    }
    auto it = dict_index_.find(k);
    if (it != dict_index_.end()) {  // Python: the key keeps its place, the value is replaced
      dict->items[it->second] = value;
      return;
    }
    if (dict->items.size() >= opt_.max_container)
      fail(cat("dict larger than the limit of ", opt_.max_container, " items"));
    dict_index_.emplace(k, dict->items.size());
    dict->keys.push_back(key);
    dict->items.push_back(value);
  }

  void global() {
    auto line = [&](const char* what) {
      const size_t start = pos_;
      while (pos_ < n_ && p_[pos_] != '\n' && pos_ - start <= 512) ++pos_;
      if (pos_ >= n_ || p_[pos_] != '\n') fail(cat("GLOBAL ", what, " is not a line of at most 512 bytes"));
      std::string s(reinterpret_cast<const char*>(p_ + start), pos_ - start);
      ++pos_;
      return s;
    };
    std::string module = line("module");
    std::string name = line("name");
    if (classify_pickle_global(module, name, opt_) == PickleGlobal::unknown)
      fail(cat("unknown global ", module, ".", name,
               "; refusing to load it (only tensors in dicts, lists and tuples, and TorchScript modules, "
               "can be read without running code: save model.state_dict() instead of the model)"));
    // A global names the same class or function each time: one value per distinct name.
    const std::string key = module + '\n' + name;
    auto it = globals_.find(key);
    if (it != globals_.end()) return push(it->second);
    PickleValue* v = make(PickleValue::Kind::global);
    v->module = std::move(module);
    v->name = std::move(name);
    globals_.emplace(key, v);
    push(v);
  }

  PickleGlobal classify(const PickleValue* v) const { return classify_pickle_global(v->module, v->name, opt_); }

  PickleValue* reduce(PickleValue* fn, PickleValue* args) {
    if (!fn->is(PickleValue::Kind::global)) fail(cat("REDUCE calls a ", fn->kind_name(), ", not a global"));
    if (!args->is(PickleValue::Kind::tuple)) fail(cat("REDUCE of ", fn->qualified_name(), " with non-tuple arguments"));
    const std::vector<PickleValue*>& a = args->items;
    switch (classify(fn)) {
      case PickleGlobal::new_dict:
        if (!a.empty()) fail(cat(fn->qualified_name(), " called with arguments (only OrderedDict() is supported)"));
        return make(PickleValue::Kind::dict);
      case PickleGlobal::call_object: {
        PickleValue* o = make(PickleValue::Kind::object);
        o->module = fn->module;
        o->name = fn->name;
        o->items = a;
        return o;
      }
      case PickleGlobal::pass_list:
        if (a.size() != 1 || !a[0]->is(PickleValue::Kind::list))
          fail(cat(fn->qualified_name(), " expects one list argument"));
        return a[0];
      case PickleGlobal::type_tag:
        if (a.size() != 2 || !a[1]->is(PickleValue::Kind::string))
          fail(cat(fn->qualified_name(), " expects (value, type name)"));
        return a[0];
      case PickleGlobal::encode_bytes: {
        if (a.size() != 2 || !a[0]->is(PickleValue::Kind::string) || !a[1]->is(PickleValue::Kind::string) ||
            (a[1]->text != "latin1" && a[1]->text != "latin-1"))
          fail(cat(fn->qualified_name(), " is only supported as encode(text, \"latin1\"), which pickles bytes"));
        PickleValue* b = make(PickleValue::Kind::bytes);
        b->text = latin1_bytes(a[0]->text);
        return b;
      }
      case PickleGlobal::empty_bytes:
        if (!a.empty()) fail(cat(fn->qualified_name(), " is only supported without arguments"));
        return make(PickleValue::Kind::bytes);
      default:
        fail(cat(fn->qualified_name(), " cannot be called"));
    }
  }

  PickleValue* new_object(PickleValue* cls, PickleValue* args) {
    if (!cls->is(PickleValue::Kind::global) || classify(cls) != PickleGlobal::script_class)
      fail(cat("NEWOBJ of ", cls->is(PickleValue::Kind::global) ? cls->qualified_name() : cls->kind_name(),
               " (only TorchScript classes are instantiated)"));
    if (!args->is(PickleValue::Kind::tuple) || !args->items.empty())
      fail(cat("NEWOBJ of ", cls->qualified_name(), " with arguments"));
    PickleValue* o = make(PickleValue::Kind::object);
    o->module = cls->module;
    o->name = cls->name;
    return o;
  }

  /// The bytes whose latin-1 decoding is the UTF-8 text `s`; IOError when `s` is not valid
  /// UTF-8 or holds a code point above U+00FF.
  std::string latin1_bytes(const std::string& s) const {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      const uint8_t c = static_cast<uint8_t>(s[i]);
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++i;
      } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size() && (static_cast<uint8_t>(s[i + 1]) & 0xC0) == 0x80) {
        const unsigned cp = ((c & 0x1Fu) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3Fu);
        if (cp < 0x80 || cp > 0xFF) fail("encoded bytes hold a character outside latin-1");
        out += static_cast<char>(cp);
        i += 2;
      } else {
        fail("encoded bytes hold a character outside latin-1");
      }
    }
    return out;
  }

  // The memo: torch's pickles number their entries 0, 1, 2, ...; any index below max_memo
  // is accepted (a dense table, at most max_memo pointers).
  void memo_put(uint32_t i) {
    PickleValue* v = top();
    if (i >= opt_.max_memo) fail(cat("memo index ", i, " is beyond the limit of ", opt_.max_memo));
    if (i >= memo_.size()) memo_.resize(std::max<size_t>(i + 1, std::min<size_t>(2 * memo_.size(), opt_.max_memo)));
    memo_[i] = v;
  }
  void memo_get(uint32_t i) {
    if (i >= memo_.size() || !memo_[i]) fail(cat("memo entry ", i, " read before it was written"));
    push(memo_[i]);
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0, op_pos_ = 0;
  PickleOptions opt_;
  Pickle result_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::vector<PickleValue*> memo_;
  std::unordered_map<std::string_view, PickleValue*> strings_;  // interned strings, by text
  std::unordered_map<std::string, PickleValue*> globals_;      // interned globals, by "module\nname"
  // Where each key sits in its dict: (dict, string value's address or integer) -> position.
  struct DictKey {
    const PickleValue* dict;
    uint64_t key;
    bool is_string;
    bool operator==(const DictKey& o) const { return dict == o.dict && key == o.key && is_string == o.is_string; }
  };
  struct DictKeyHash {
    size_t operator()(const DictKey& k) const {
      return std::hash<uint64_t>()(k.key * 0x9E3779B97F4A7C15ull ^ reinterpret_cast<uintptr_t>(k.dict) ^ k.is_string);
    }
  };
  std::unordered_map<DictKey, size_t, DictKeyHash> dict_index_;
};

inline Pickle unpickle(const uint8_t* data, size_t size, const std::string& origin, const PickleOptions& options) {
  return Unpickler(data, size, origin, options).run();
}

}  // namespace ga::io
