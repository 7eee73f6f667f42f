#include "coordinator/json_schema.h"

#include <algorithm>
#include <bitset>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "coordinator/json_string_pattern.h"
#include "coordinator/number_regex.h"
#include "coordinator/output_constraint.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator {
namespace {

// Ordered: an object's properties are written in the order the schema lists them.
using Json = nlohmann::ordered_json;

// The pieces of JSON text, as patterns. After '{', '[' and ',' and before '}' and ']':
// nothing, one space, or a line break and an indent; after ':' nothing or one space; nothing
// before ':' or ','. What compact, spaced and pretty-printed JSON write (Python's json.dumps
// with or without indent, JavaScript's JSON.stringify), and a gap a weak model cannot pad.
const std::string& Whitespace() {
  static const std::string* ws =
      new std::string(absl::StrCat("(?: |\\n[ \\t]{0,", kMaxJsonSchemaIndent, "})?"));
  return *ws;
}
constexpr absl::string_view kColon = ": ?";
// One character of a string: unescaped (not '"', '\\' or a control character), a short
// escape, or a \u escape of a character of the Basic Multilingual Plane (not a surrogate: so
// each is one character, as minLength and maxLength count; others are written as UTF-8).
constexpr absl::string_view kStringChar =
    R"((?:[^"\\\x00-\x1F]|\\["\\/bfnrt])"
    R"(|\\u(?:[0-9A-Ca-cEFef][0-9A-Fa-f]{3}|[Dd][0-7][0-9A-Fa-f]{2})))";
constexpr absl::string_view kUnsignedInteger = "(?:0|[1-9][0-9]{0,15})";
// At most two exponent digits: every number written is a finite double (1e999 would be inf
// to a reader, whose JSON writer then writes Infinity, which is not JSON).
constexpr absl::string_view kFractionExponent = R"((?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,2})?)";
constexpr absl::string_view kBooleanOrNull = "true|false|null";

std::string AnyString() { return absl::StrCat("\"", kStringChar, "*\""); }
std::string AnyNumber() { return absl::StrCat("-?", kUnsignedInteger, kFractionExponent); }

// `text` matched literally.
std::string Literal(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("\\.^$|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// [`item` (, `item`)*] with `min`..`max` items (max -1: no bound).
std::string ArrayOf(const std::string& item, int min, int max) {
  const std::string& ws = Whitespace();
  if (max == 0) return absl::StrCat("\\[", ws, "\\]");
  const std::string more = max < 0 ? absl::StrCat("{", std::max(min - 1, 0), ",}")
                                   : absl::StrCat("{", std::max(min - 1, 0), ",", max - 1, "}");
  std::string items = absl::StrCat(item, "(?:", ",", ws, item, ")", more);
  if (min == 0) items = absl::StrCat("(?:", items, ")?");
  return absl::StrCat("\\[", ws, items, ws, "\\]");
}

// {"key": `value`, ...} with any string keys.
std::string MapOf(const std::string& value) {
  const std::string& ws = Whitespace();
  const std::string entry = absl::StrCat(AnyString(), kColon, value);
  return absl::StrCat("\\{", ws, "(?:", entry, "(?:", ",", ws, entry, ")*)?", ws, "\\}");
}

// A value of any type, containers nested at most `depth` deep.
std::string AnyValue(int depth) {
  const std::string scalar = absl::StrCat(AnyString(), "|", AnyNumber(), "|", kBooleanOrNull);
  if (depth == 0) return absl::StrCat("(?:", scalar, ")");
  const std::string inner = AnyValue(depth - 1);
  return absl::StrCat("(?:", scalar, "|", ArrayOf(inner, 0, -1), "|", MapOf(inner), ")");
}

// At most `max` bytes of `text`, cut at a character's start, "..." after a cut.
std::string Clip(std::string_view text, size_t max) {
  if (text.size() <= max) return std::string(text);
  size_t end = max;
  while (end > 0 && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(std::string(text.substr(0, end)), "...");
}

// `name` as a step of a JSON pointer (RFC 6901: '~' is ~0, '/' is ~1).
std::string PointerToken(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// The work a const or enum value costs beside its text (Writer::Spend): looking at it.
constexpr size_t kWorkPerValue = 16;

constexpr int64_t kMaxIntegerBound = 1'000'000'000'000'000;  // 10^15
// multipleOf on integers: at most this step, and this many multiples listed in a range.
constexpr int64_t kMaxMultipleOf = 1'000'000;
constexpr int64_t kMaxListedMultiples = 256;

// Writes the integers of [lo, hi] (an end absent: unbounded) as two sides of 0: `side(from, to,
// "")` for those >= 0, in [from, to], and `side(from, to, "-")` for those < 0 as '-' and their
// magnitude, in [from, to] (to absent: unbounded); only a side that holds one.
using SideWriter =
    std::function<absl::Status(int64_t from, std::optional<int64_t> to, const char* sign)>;
absl::Status EachSideOfZero(std::optional<int64_t> lo, std::optional<int64_t> hi,
                            const SideWriter& side) {
  const int64_t from = lo ? std::max<int64_t>(*lo, 0) : 0;
  if (!hi || *hi >= from) RETURN_IF_ERROR(side(from, hi, ""));
  if (!lo || *lo < 0) {
    const int64_t p = hi ? std::max<int64_t>(1, -*hi) : 1;
    const std::optional<int64_t> q = lo ? std::optional<int64_t>(-*lo) : std::nullopt;
    if (!q || p <= *q) RETURN_IF_ERROR(side(p, q, "-"));
  }
  return absl::OkStatus();
}

class Writer {
 public:
  // Each recursive $ref is followed at most `recursion` deep; `work` counts what is written
  // and looked at, shared by the attempts at one schema (Spend).
  Writer(const Json& root, int recursion, size_t& work)
      : root_(root), recursion_(recursion), work_(work) {}

  // Whether a $ref was met inside itself (the schema is recursive).
  bool recursive() const { return recursive_; }

  absl::Status Value(const Json& s, std::string& out) {
    if (++depth_ > kMaxJsonSchemaDepth) {
      return Error(absl::StrCat("schemas nested deeper than ", kMaxJsonSchemaDepth));
    }
    const size_t before = out.size();
    RETURN_IF_ERROR(Schema(s, out));
    --depth_;
    RETURN_IF_ERROR(Spend(out.size() - before));
    if (out.size() > static_cast<size_t>(kMaxJsonSchemaRegexBytes)) {
      return Error(absl::StrCat("written out as a regular expression the schema is over ",
                                kMaxJsonSchemaRegexBytes,
                                " bytes (fewer properties, references used fewer times)"));
    }
    return absl::OkStatus();
  }

 private:
  // The client's text in a message is clipped: a status travels in gRPC's trailers.
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("json_schema: ", Clip(Where(), 256), ": ", Clip(what, 768)));
  }
  // Counts `bytes` of work (pattern written at some level, literals looked at): the writer
  // stops at kMaxJsonSchemaWork, whatever the schema makes it copy or discard.
  absl::Status Spend(size_t bytes) {
    work_ += bytes;
    if (work_ > static_cast<size_t>(kMaxJsonSchemaWork)) {
      return Error(absl::StrCat("writing the schema out takes more than the ", kMaxJsonSchemaWork,
                                " bytes of work a request may (fewer properties, alternatives "
                                "or references)"));
    }
    return absl::OkStatus();
  }
  std::string Where() const {
    std::string at = "#";
    for (const std::string& p : path_) absl::StrAppend(&at, "/", p);
    return at;
  }
  // Value() of `s` at `step` below the current place.
  absl::Status Below(const Json& s, std::string_view step, std::string& out) {
    path_.emplace_back(step);
    RETURN_IF_ERROR(Value(s, out));
    path_.pop_back();
    return absl::OkStatus();
  }

  static bool Annotation(std::string_view key) {
    for (std::string_view k :
         {"title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs",
          "definitions", "deprecated", "readOnly", "writeOnly", "discriminator"}) {
      if (key == k) return true;
    }
    return false;
  }
  static bool Served(std::string_view key) {
    for (std::string_view k : {"type",
                               "enum",
                               "const",
                               "anyOf",
                               "oneOf",
                               "allOf",
                               "$ref",
                               "properties",
                               "required",
                               "additionalProperties",
                               "items",
                               "prefixItems",
                               "minItems",
                               "maxItems",
                               "uniqueItems",
                               "minLength",
                               "maxLength",
                               "pattern",
                               "format",
                               "minimum",
                               "maximum",
                               "exclusiveMinimum",
                               "exclusiveMaximum",
                               "multipleOf"}) {
      if (key == k) return true;
    }
    return Annotation(key);
  }

  // A keyword of `s` that is not an annotation nor one of `allowed`, if any.
  static std::optional<std::string> OtherThan(const Json& s, std::string_view allowed,
                                              std::string_view also = "",
                                              std::string_view too = "") {
    for (const auto& [key, v] : s.items()) {
      if (key != allowed && key != also && key != too && !Annotation(key)) return key;
    }
    return std::nullopt;
  }

  absl::Status Schema(const Json& s, std::string& out) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) return Error("the schema false matches no value");
      out += AnyValue(kJsonSchemaAnyDepth);
      return absl::OkStatus();
    }
    if (!s.is_object()) return Error("a schema is an object or a boolean");
    for (const auto& [key, v] : s.items()) {
      if (!Served(key)) {
        return Error(absl::StrCat("the keyword \"", key,
                                  "\" is not served (json_schema.h lists those that are)"));
      }
    }
    if (s.contains("$id") && &s != &root_) {
      return Error("$id below the root is not served (it moves where $ref points)");
    }
    if ((s.contains("const") || s.contains("enum"))) {
      if (std::optional<std::string> other = OtherThan(s, "type", "const", "enum")) {
        return Error(absl::StrCat("\"", *other,
                                  "\" beside const or enum is not served (list the values "
                                  "that keep to it)"));
      }
    }
    for (std::string_view single : {"$ref", "allOf", "anyOf", "oneOf"}) {
      if (!s.contains(single)) continue;
      if (std::optional<std::string> other = OtherThan(s, single)) {
        return Error(absl::StrCat("\"", std::string(single), "\" beside \"", *other,
                                  "\" is not served (move the keyword into it)"));
      }
    }
    if (s.contains("$ref")) return Reference(s["$ref"], out);
    if (s.contains("allOf")) {
      const Json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1) {
        return Error("allOf is served with one schema only");
      }
      return Below(all[0], "allOf/0", out);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!s.contains(key)) continue;
      const Json& alts = s[key];
      if (!alts.is_array() || alts.empty())
        return Error(absl::StrCat(key, " is a non-empty array"));
      out += "(?:";
      for (size_t i = 0; i < alts.size(); ++i) {
        if (i > 0) out += '|';
        RETURN_IF_ERROR(Below(alts[i], absl::StrCat(key, "/", i), out));
      }
      out += ')';
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(const std::vector<std::string> types, Types(s));
    if (s.contains("const") || s.contains("enum")) return Literals(s, types, out);
    out += "(?:";
    for (size_t i = 0; i < types.size(); ++i) {
      if (i > 0) out += '|';
      const std::string& t = types[i];
      if (t == "object") {
        RETURN_IF_ERROR(Object(s, out));
      } else if (t == "array") {
        RETURN_IF_ERROR(Array(s, out));
      } else if (t == "string") {
        RETURN_IF_ERROR(String(s, out));
      } else if (t == "integer") {
        RETURN_IF_ERROR(Integer(s, out));
      } else if (t == "number") {
        RETURN_IF_ERROR(Number(s, out));
      } else if (t == "boolean") {
        out += "true|false";
      } else if (t == "null") {
        out += "null";
      } else {
        out += AnyValue(kJsonSchemaAnyDepth);
      }
    }
    out += ')';
    return absl::OkStatus();
  }

  // The types a schema's value may have: its "type", or those its keywords are for, or "any".
  absl::StatusOr<std::vector<std::string>> Types(const Json& s) const {
    static const std::set<std::string> kTypes = {"object", "array",   "string", "integer",
                                                 "number", "boolean", "null"};
    std::vector<std::string> types;
    if (const auto it = s.find("type"); it != s.end()) {
      const Json list = it->is_array() ? *it : Json::array({*it});
      for (const Json& t : list) {
        if (!t.is_string() || !kTypes.contains(t.get<std::string>())) {
          return Error(absl::StrCat("type ", t.dump(),
                                    " is not one of object, array, string, "
                                    "integer, number, boolean, null"));
        }
        types.push_back(t.get<std::string>());
      }
      if (types.empty()) return Error("type is an empty list: no value matches");
      return types;
    }
    auto has = [&](std::initializer_list<const char*> keys) {
      return std::any_of(keys.begin(), keys.end(), [&](const char* k) { return s.contains(k); });
    };
    if (has({"properties", "required", "additionalProperties"})) types.push_back("object");
    if (has({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})) {
      types.push_back("array");
    }
    if (has({"minLength", "maxLength", "format", "pattern"})) types.push_back("string");
    if (has({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})) {
      types.push_back("number");
    }
    if (types.empty()) types.push_back("any");
    return types;
  }

  // Where a $ref target points: the subschema and its JSON pointer's steps.
  struct Resolved {
    const Json* at;
    std::vector<std::string> steps;
  };
  absl::StatusOr<Resolved> Resolve(const std::string& target) const {
    // A URI fragment: percent-escapes first (RFC 6901 section 6), then the pointer's own.
    std::string decoded;
    for (size_t i = 1; i < target.size(); ++i) {
      if (target[i] != '%') {
        decoded += target[i];
        continue;
      }
      int byte = 0;
      if (i + 2 >= target.size() || !std::isxdigit(static_cast<uint8_t>(target[i + 1])) ||
          !std::isxdigit(static_cast<uint8_t>(target[i + 2])) ||
          !absl::SimpleHexAtoi(target.substr(i + 1, 2), &byte)) {
        return Error(absl::StrCat("$ref ", target, " has a bad percent-escape"));
      }
      decoded += static_cast<char>(byte);
      i += 2;
    }
    const Json* at = &root_;
    std::vector<std::string> steps;
    std::string_view pointer = decoded;
    while (!pointer.empty()) {
      if (pointer[0] != '/') return Error(absl::StrCat("$ref ", target, " is not a JSON pointer"));
      pointer.remove_prefix(1);
      const size_t end = std::min(pointer.find('/'), pointer.size());
      std::string token;
      for (size_t i = 0; i < end; ++i) {  // ~1 is '/', ~0 is '~'
        if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
          token += pointer[++i] == '0' ? '~' : '/';
        } else {
          token += pointer[i];
        }
      }
      pointer.remove_prefix(end);
      if (at->is_object() && at->contains(token)) {
        at = &(*at)[token];
      } else if (at->is_array() && !token.empty() &&
                 token.find_first_not_of("0123456789") == std::string::npos && token.size() < 10 &&
                 std::stoul(token) < at->size()) {
        at = &(*at)[std::stoul(token)];
      } else {
        return Error(absl::StrCat("$ref ", target, " refers to nothing in this schema"));
      }
      steps.push_back(PointerToken(token));
    }
    return Resolved{at, std::move(steps)};
  }

  absl::Status Reference(const Json& ref, std::string& out) {
    if (!ref.is_string() || !ref.get<std::string>().starts_with("#")) {
      return Error("$ref is served as \"#\" or \"#/...\" (a JSON pointer into this schema)");
    }
    const std::string target = ref.get<std::string>();
    int& active = active_refs_[target];  // a map's entries stay where they are
    if (active > 0) recursive_ = true;
    if (active >= recursion_) {  // as deep as it is followed: a branch no output takes
      out += "(?!)";
      return absl::OkStatus();
    }
    // Each expansion costs the walk that places it (resolved once a target, then kept).
    RETURN_IF_ERROR(Spend(target.size()));
    auto it = resolved_.find(target);
    if (it == resolved_.end()) {
      ASSIGN_OR_RETURN(Resolved r, Resolve(target));
      it = resolved_.emplace(target, std::move(r)).first;
    }
    const Json* at = it->second.at;
    const std::vector<std::string>& steps = it->second.steps;
    std::vector<std::string> saved = std::exchange(path_, steps);
    ++active;
    const absl::Status status = Value(*at, out);
    --active;
    if (!status.ok()) return status;
    path_ = std::move(saved);
    return absl::OkStatus();
  }

  // const or enum: their values, as JSON text, those of the schema's types.
  absl::Status Literals(const Json& s, const std::vector<std::string>& types, std::string& out) {
    if (s.contains("const") && s.contains("enum")) return Error("const beside enum");
    std::vector<const Json*> values;
    if (s.contains("const")) {
      values.push_back(&s["const"]);
    } else {
      const Json& e = s["enum"];
      if (!e.is_array() || e.empty()) return Error("enum is a non-empty array");
      for (const Json& v : e) values.push_back(&v);
    }
    auto of_type = [&](const Json& v) {
      for (const std::string& t : types) {
        if (t == "any" || (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
            (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
            (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null()) ||
            (t == "integer" &&
             (v.is_number_integer() ||
              (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>())))) {
          return true;
        }
      }
      return false;
    };
    std::vector<std::string> alts;
    for (const Json* value : values) {
      const Json& v = *value;
      const std::string text = v.dump(-1, ' ', false, Json::error_handler_t::replace);
      RETURN_IF_ERROR(Spend(text.size() + kWorkPerValue));
      if (!of_type(v)) continue;
      if (HasInexactNumber(v)) {
        return Error(absl::StrCat("the number in ", Clip(text, 64),
                                  " is beyond what a double holds exactly (2^53): not served "
                                  "in const or enum"));
      }
      alts.push_back(Literal(text));
    }
    if (alts.empty()) return Error("no value of const or enum has the schema's type");
    absl::StrAppend(&out, "(?:", absl::StrJoin(alts, "|"), ")");
    return absl::OkStatus();
  }

  // Whether `v` holds a number parsed as a double that may not be the schema's own (an integer
  // beyond 2^53 written as one, or one past 64 bits): its JSON text would be another number.
  static bool HasInexactNumber(const Json& v) {
    if (v.is_number_float()) return std::abs(v.get<double>()) >= 9007199254740992.0;
    if (v.is_structured()) {
      for (const Json& x : v) {
        if (HasInexactNumber(x)) return true;
      }
    }
    return false;
  }

  // A count keyword (minLength, maxItems, ...): absent is `absent`.
  // A count keyword's value, `absent` without it; at most `most` (a larger one is refused as
  // over what is served, or read as `most` when `clamp`).
  absl::StatusOr<int> Count(const Json& s, const char* key, int absent,
                            int most = kMaxJsonSchemaCount, bool clamp = false) const {
    const auto it = s.find(key);
    if (it == s.end()) return absent;
    // A non-negative integer, 2.0 as 2 (JSON Schema's integers are the values, not the forms).
    const double v = it->is_number() ? it->get<double>() : -1;
    if (v < 0 || std::trunc(v) != v) return Error(absl::StrCat(key, " is a non-negative integer"));
    if (v > most && clamp) return most;
    if (v > most) {
      return Error(absl::StrCat(key, " ", Clip(it->dump(), 32), " is over the ",
                                kMaxJsonSchemaCount, " served"));
    }
    return static_cast<int>(v);
  }

  absl::Status Object(const Json& s, std::string& out) {
    const std::string& ws = Whitespace();
    const Json empty = Json::object();
    const Json& props = s.contains("properties") ? s["properties"] : empty;
    if (!props.is_object()) return Error("properties is an object");
    std::set<std::string> required;
    if (s.contains("required")) {
      const Json& r = s["required"];
      if (!r.is_array()) return Error("required is an array of property names");
      for (const Json& name : r) {
        if (!name.is_string()) return Error("required is an array of property names");
        if (!props.contains(name.get<std::string>())) {
          return Error(absl::StrCat("required names \"", name.get<std::string>(),
                                    "\", which properties lacks (not served: give its schema)"));
        }
        required.insert(name.get<std::string>());
      }
    }
    const Json* additional =
        s.contains("additionalProperties") ? &s["additionalProperties"] : nullptr;
    if (additional != nullptr && !additional->is_boolean() && !additional->is_object()) {
      return Error("additionalProperties is a schema or a boolean");
    }
    if (props.empty()) {
      if (additional != nullptr && additional->is_boolean() && !additional->get<bool>()) {
        absl::StrAppend(&out, "\\{", ws, "\\}");
        return absl::OkStatus();
      }
      std::string value;
      if (additional != nullptr && additional->is_object()) {
        RETURN_IF_ERROR(Below(*additional, "additionalProperties", value));
      } else {
        value = AnyValue(kJsonSchemaAnyDepth - 1);
      }
      out += MapOf(value);
      return absl::OkStatus();
    }
    // "key": value for each property, and whether it is required.
    std::vector<std::pair<std::string, bool>> entries;
    for (const auto& [name, schema] : props.items()) {
      if (schema.is_boolean() && !schema.get<bool>()) {  // the property must be absent
        if (required.contains(name)) {
          return Error(absl::StrCat("required names \"", name,
                                    "\", whose schema is false: no object matches"));
        }
        continue;
      }
      std::string entry = absl::StrCat(
          Literal(Json(name).dump(-1, ' ', false, Json::error_handler_t::replace)), kColon);
      RETURN_IF_ERROR(Below(schema, absl::StrCat("properties/", PointerToken(name)), entry));
      entries.emplace_back(std::move(entry), required.contains(name));
    }
    if (entries.empty()) {
      absl::StrAppend(&out, "\\{", ws, "\\}");
      return absl::OkStatus();
    }
    // The lists of entries in order, every required one present, built entry by entry so that
    // each step holds the last once (linear in the properties; a list of the first k is
    // `list`, and may be empty while none of them is required):
    //   a required entry E:  list,E  or, while it may be empty,  (?:list,)?E
    //   an optional one:     list(?:,E)?  or, while it may be empty,  (?:list(?:,E)?|E)
    // Written left to right: the groups that wrap the list so far open first.
    size_t wraps = 0;
    bool may_be_empty = !entries[0].second;
    for (size_t k = 1; k < entries.size(); ++k) {
      wraps += may_be_empty ? 1 : 0;
      may_be_empty = may_be_empty && !entries[k].second;
    }
    absl::StrAppend(&out, "\\{", ws, may_be_empty ? "(?:" : "");
    for (size_t w = 0; w < wraps; ++w) out += "(?:";
    out += entries[0].first;
    may_be_empty = !entries[0].second;
    for (size_t k = 1; k < entries.size(); ++k) {
      const auto& [entry, is_required] = entries[k];
      if (is_required && may_be_empty) {
        absl::StrAppend(&out, ",", ws, ")?", entry);
      } else if (is_required) {
        absl::StrAppend(&out, ",", ws, entry);
      } else if (may_be_empty) {
        absl::StrAppend(&out, "(?:,", ws, entry, ")?|", entry, ")");
      } else {
        absl::StrAppend(&out, "(?:,", ws, entry, ")?");
      }
      may_be_empty = may_be_empty && !is_required;
      if (out.size() > static_cast<size_t>(kMaxJsonSchemaRegexBytes)) break;  // Value's error
    }
    absl::StrAppend(&out, may_be_empty ? ")?" : "", ws, "\\}");
    return absl::OkStatus();
  }

  absl::Status Array(const Json& s, std::string& out) {
    ASSIGN_OR_RETURN(const int min, Count(s, "minItems", 0));
    ASSIGN_OR_RETURN(int max, Count(s, "maxItems", -1));
    if (max >= 0 && max < min) return Error("maxItems < minItems: no array matches");
    if (s.contains("uniqueItems") && !(s["uniqueItems"].is_boolean() &&
                                       (!s["uniqueItems"].get<bool>() || (max >= 0 && max <= 1)))) {
      return Error("uniqueItems true is not served (a regular expression cannot compare items)");
    }
    // prefixItems (or draft 7's items as an array): the first items' own schemas.
    const Json* prefix = nullptr;
    const Json* items = s.contains("items") ? &s["items"] : nullptr;
    std::string prefix_key = "prefixItems";
    if (s.contains("prefixItems")) {
      prefix = &s["prefixItems"];
    } else if (items != nullptr && items->is_array()) {
      prefix = items;
      items = nullptr;
      prefix_key = "items";
    }
    std::string item;
    bool more = true;  // whether items past the prefix may follow
    if (items != nullptr) {
      if (items->is_boolean() && !items->get<bool>()) {
        more = false;
      } else {
        RETURN_IF_ERROR(Below(*items, "items", item));
      }
    } else if (prefix != nullptr) {
      // Absent: any items may follow. Written: none, unless minItems needs them.
      if (prefix->is_array() && min > static_cast<int>(prefix->size())) {
        item = AnyValue(kJsonSchemaAnyDepth - 1);
      } else {
        more = false;
      }
    } else {
      item = AnyValue(kJsonSchemaAnyDepth - 1);
    }
    if (prefix == nullptr || prefix->empty()) {
      if (prefix != nullptr && !prefix->is_array()) return Error("prefixItems is an array");
      if (!more) max = 0;
      if (max == 0 && min > 0) return Error("items false with minItems > 0: no array matches");
      out += ArrayOf(item, min, max);
      return absl::OkStatus();
    }
    if (!prefix->is_array()) return Error(absl::StrCat(prefix_key, " is an array"));
    const int k = static_cast<int>(prefix->size());
    if (!more && min > k) return Error("minItems is more than the items written: no array matches");
    if (k > kMaxJsonSchemaPrefixItems) {
      return Error(absl::StrCat(prefix_key, " holds over the ", kMaxJsonSchemaPrefixItems,
                                " schemas served"));
    }
    const std::string& ws = Whitespace();
    // The items after the prefix.
    std::string tail;
    const int tail_max = !more ? 0 : max < 0 ? -1 : std::max(max - k, 0);
    if (tail_max != 0) {
      const int tail_min = std::max(min - k, 0);
      tail = absl::StrCat("(?:", ",", ws, item, ")",
                          tail_max < 0 ? absl::StrCat("{", tail_min, ",}")
                                       : absl::StrCat("{", tail_min, ",", tail_max, "}"));
    }
    const int written = max < 0 ? k : std::min(k, max);
    if (written == 0) {
      out += ArrayOf(item, min, max);  // maxItems 0
      return absl::OkStatus();
    }
    // Item i (0-based) then the rest: required while i + 1 < min.
    std::vector<std::string> parts(static_cast<size_t>(written));
    for (int i = 0; i < written; ++i) {
      RETURN_IF_ERROR(Below((*prefix)[static_cast<size_t>(i)], absl::StrCat(prefix_key, "/", i),
                            parts[static_cast<size_t>(i)]));
    }
    std::string body = written == k ? tail : "";
    for (int i = written - 1; i >= 1; --i) {
      body = absl::StrCat(i < min ? "" : "(?:", ",", ws, parts[static_cast<size_t>(i)], body,
                          i < min ? "" : ")?");
    }
    body = absl::StrCat(parts[0], body);
    if (min == 0) body = absl::StrCat("(?:", body, ")?");
    absl::StrAppend(&out, "\\[", ws, body, ws, "\\]");
    return absl::OkStatus();
  }

  absl::Status String(const Json& s, std::string& out) {
    // A format this does not know (pydantic's "password", "binary") is an annotation, as
    // JSON Schema takes unknown formats: the string is served as without it.
    const auto format = s.find("format");
    const bool formatted = format != s.end() && !UnknownFormat(*format);
    if (formatted && !s.contains("pattern")) return FormatString(s, *format, out);
    if (const auto it = s.find("pattern"); it != s.end()) {
      if (formatted) return Error("pattern beside format is not served");
      return Pattern(*it, s, out);
    }
    ASSIGN_OR_RETURN(const int min, Count(s, "minLength", 0));
    ASSIGN_OR_RETURN(const int max, Count(s, "maxLength", -1));
    if (max >= 0 && max < min) return Error("maxLength < minLength: no string matches");
    const std::string count = max < 0 ? (min == 0 ? "*" : absl::StrCat("{", min, ",}"))
                                      : absl::StrCat("{", min, ",", max, "}");
    absl::StrAppend(&out, "\"", kStringChar, count, "\"");
    return absl::OkStatus();
  }

  // Whether every length in [fewest, most] (most -1: no bound) is within `s`'s minLength and
  // maxLength, of any size (a bound past every length cuts nothing).
  absl::StatusOr<bool> LengthsWithin(const Json& s, int64_t fewest, int64_t most) const {
    constexpr int kLongest = 1 << 30;  // longer bounds are read as this
    ASSIGN_OR_RETURN(const int min, Count(s, "minLength", 0, kLongest, /*clamp=*/true));
    ASSIGN_OR_RETURN(const int max, Count(s, "maxLength", -1, kLongest, /*clamp=*/true));
    return fewest >= min && (max < 0 || (most >= 0 && most <= max));
  }

  // A string of a format. Beside minLength or maxLength, served when every form's length is
  // within them (pydantic's AnyUrl says maxLength 2083): the forms are ASCII, a byte a
  // character.
  absl::Status FormatString(const Json& s, const Json& format, std::string& out) {
    ASSIGN_OR_RETURN(const std::string form, Format(format));
    if (s.contains("minLength") || s.contains("maxLength")) {
      auto lengths = format_lengths_.find(form);  // compiled once a form, however often used
      if (lengths == format_lengths_.end()) {
        absl::StatusOr<std::shared_ptr<const CompiledRegex>> re = CompiledRegex::Compile(form);
        if (!re.ok()) return absl::InternalError(re.status().message());
        lengths = format_lengths_.emplace(form, (*re)->MatchLengths()).first;
      }
      const auto [fewest, most] = lengths->second;
      ASSIGN_OR_RETURN(const bool within, LengthsWithin(s, fewest, most));
      if (!within) {
        return Error(absl::StrCat("format ", format.dump(), " is ", fewest, " to ",
                                  most < 0 ? "any number of" : absl::StrCat(most),
                                  " characters here; minLength or maxLength would cut it "
                                  "(not served)"));
      }
    }
    absl::StrAppend(&out, "\"", form, "\"");
    return absl::OkStatus();
  }

  // A string that a regular expression finds in (JSON Schema's pattern: a search, anchored by
  // a leading ^ or a trailing $), over the string's value: where its matches hold no
  // character a JSON string escapes ('"', '\\', control characters) the JSON text holds a
  // match as it is; else the pattern is written over the JSON text (JsonStringPattern). It
  // is written in between any characters.
  // Beside minLength or maxLength (`s`'s), served when the pattern is anchored at both ends,
  // its matches ASCII and need no JSON escape, and every match's length is within them: then
  // the pattern alone keeps them.
  absl::Status Pattern(const Json& p, const Json& s, std::string& out) {
    if (!p.is_string()) return Error("pattern is a string (a regular expression)");
    std::string text = p.get<std::string>();
    // \d \w \s are ASCII's here and Unicode's to validators (Python's re; \s to ECMAScript's
    // too): inside [^...] that would let through characters the schema refuses.
    // \D \W \S are the other ASCII characters here where a match may hold an escaped one
    // (JsonStringPattern), and a negated class around them would take every other character.
    if (text.find("[^") != std::string::npos) {
      for (const char* cls : {"\\d", "\\w", "\\s", "\\D", "\\W", "\\S"}) {
        if (text.find(cls) != std::string::npos) {
          return Error(
              "pattern with \\d, \\w or \\s (or \\D, \\W, \\S) beside a negated class "
              "[^...] is not served (they are ASCII's here, Unicode's to validators: write the "
              "characters, e.g. [^0-9...])");
        }
      }
    }
    // Checked once a pattern, however often used: whether a match may hold a character JSON
    // escapes; then each character is written as a JSON string writes it.
    auto checked = patterns_.find(text);
    if (checked == patterns_.end()) {
      absl::StatusOr<std::shared_ptr<const CompiledRegex>> re = CompiledRegex::Compile(text);
      if (!re.ok()) return Error(absl::StrCat("pattern: ", re.status().message()));
      std::bitset<256> escaped;
      for (int b = 0; b < 0x20; ++b) escaped.set(static_cast<size_t>(b));
      escaped.set('"');
      escaped.set('\\');
      std::bitset<256> high;
      for (int b = 0x80; b < 0x100; ++b) high.set(static_cast<size_t>(b));
      const auto [fewest, most] = (*re)->MatchLengths();
      checked = patterns_
                    .emplace(text, PatternFacts{.plain = !(*re)->MayTake(escaped),
                                                .ascii = !(*re)->MayTake(high),
                                                .fewest = fewest,
                                                .most = most})
                    .first;
    }
    const bool plain = checked->second.plain;
    const bool from_start = text.starts_with("^");
    size_t backslashes = 0;  // before a trailing '$': an odd count escapes it
    for (size_t i = text.size() - (text.empty() ? 0 : 1); i-- > 0 && text[i] == '\\';) {
      ++backslashes;
    }
    const bool to_end =
        text.size() > (from_start ? 1 : 0) && text.ends_with("$") && backslashes % 2 == 0;
    if (s.contains("minLength") || s.contains("maxLength")) {
      const PatternFacts& f = checked->second;
      ASSIGN_OR_RETURN(const bool within, LengthsWithin(s, f.fewest, f.most));
      if (!from_start || !to_end || !plain || !f.ascii || !within) {
        return Error(absl::StrCat(
            "pattern beside minLength or maxLength is served when the pattern is anchored (^...$),"
            " its matches ASCII and within the lengths; here they are ",
            f.fewest, " to ", f.most < 0 ? "any number of" : absl::StrCat(f.most), " bytes",
            from_start && to_end ? "" : " and the pattern is a search"));
      }
    }
    if (from_start) text.erase(0, 1);
    if (to_end) text.pop_back();
    if (!plain) {
      absl::StatusOr<std::string> written = JsonStringPattern(text);
      if (!written.ok()) return Error(absl::StrCat("pattern: ", written.status().message()));
      RETURN_IF_ERROR(Spend(written->size()));
      text = *std::move(written);
    }
    absl::StrAppend(&out, "\"", from_start ? "" : absl::StrCat(kStringChar, "*"), "(?:", text, ")",
                    to_end ? "" : absl::StrCat(kStringChar, "*"), "\"");
    return absl::OkStatus();
  }

  // Not one of JSON Schema's formats (2020-12, section 7.3): pydantic's "password" and
  // "binary", say. Those of JSON Schema that are not served are refused, not let through.
  static bool UnknownFormat(const Json& f) {
    static constexpr std::string_view kJsonSchemaFormats[] = {
        "date-time",    "date",          "time",
        "duration",     "email",         "idn-email",
        "hostname",     "idn-hostname",  "ipv4",
        "ipv6",         "uri",           "uri-reference",
        "iri",          "iri-reference", "uuid",
        "uri-template", "json-pointer",  "relative-json-pointer",
        "regex"};
    return f.is_string() && std::find(std::begin(kJsonSchemaFormats), std::end(kJsonSchemaFormats),
                                      f.get<std::string>()) == std::end(kJsonSchemaFormats);
  }

  absl::StatusOr<std::string> Format(const Json& f) const {
    // Dates of the calendar (days of each month, February 29 of leap years, no year 0) and
    // times without a leap second: what Python's datetime and pydantic accept.
    const std::string year = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)";
    const std::string leap_year =
        "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)";
    const std::string date = absl::StrCat(
        "(?:", year,
        "-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
        "|02-(?:0[1-9]|1[0-9]|2[0-8]))|",
        leap_year, "-02-29)");
    const std::string time = R"((?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?)"
                             R"((?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]))";
    const std::string hex = "[0-9A-Fa-f]";
    const std::string octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    const std::string name = f.is_string() ? f.get<std::string>() : "";
    if (name == "date") return date;
    if (name == "time") return time;
    if (name == "date-time") return absl::StrCat(date, "[Tt]", time);
    if (name == "uuid") {
      return absl::StrCat(hex, "{8}-", hex, "{4}-", hex, "{4}-", hex, "{4}-", hex, "{12}");
    }
    if (name == "ipv4") return absl::StrCat(octet, "(?:\\.", octet, "){3}");
    if (name == "ipv6") {  // RFC 4291's text forms, "::" for one or more zero groups
      const std::string h = absl::StrCat(hex, "{1,4}");
      return absl::StrCat("(?:(?:", h, ":){7}", h, "|(?:", h, ":){1,7}:|(?:", h, ":){1,6}:", h,
                          "|(?:", h, ":){1,5}(?::", h, "){1,2}|(?:", h, ":){1,4}(?::", h,
                          "){1,3}|(?:", h, ":){1,3}(?::", h, "){1,4}|(?:", h, ":){1,2}(?::", h,
                          "){1,5}|", h, ":(?::", h, "){1,6}|:(?:(?::", h, "){1,7}|:))");
    }
    // A DNS name's label (RFC 1123): letters, digits and inner hyphens, at most 63.
    const std::string label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    if (name == "hostname") {  // 2 to 4 labels of at most 62: at most 251 of RFC 1123's 253
      const std::string label62 = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,60}[A-Za-z0-9])?";
      return absl::StrCat(label62, "(?:\\.", label62, "){1,3}");
    }
    if (name == "email") {
      // The common subset of RFC 5321's, and short: at most 4 dot-separated atoms of at most
      // 15 of these characters, '@', at most 3 labels of at most 32 and a top-level name of
      // 2 to 24 letters (at most 187 characters, under RFC 5321's 254; a model that cannot
      // place the '@' is brought to it).
      const std::string atom = "[A-Za-z0-9_%+-]{1,15}";
      const std::string short_label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?";
      return absl::StrCat(atom, "(?:\\.", atom, "){0,3}@(?:", short_label,
                          "\\.){1,3}[A-Za-z]{2,24}");
    }
    if (name == "uri") {
      // http(s) URLs of RFC 3986's characters, each part bounded so that the whole is at
      // most 2,011 characters (pydantic's AnyUrl allows 2,083): a host name of at most 4
      // labels, the last starting with a letter (WHATWG's parsers read a numeric last label
      // as an IPv4 address), or an IPv4 address; a port up to 65535; at most 12 path
      // segments of 32 characters, a query of 128 and a fragment of 64 (a character:
      // unreserved, sub-delims, ':' '@', or %XX).
      const std::string last_label = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
      const std::string port =
          "(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
      const std::string c = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
      const std::string cq = "(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})";
      return absl::StrCat("https?://(?:(?:", label, "\\.){0,3}", last_label, "|", octet, "(?:\\.",
                          octet, "){3})(?::", port, ")?(?:/", c, "{0,32}){0,12}(?:\\?", cq,
                          "{0,128})?(?:#", cq, "{0,64})?");
    }
    if (name == "duration") {  // RFC 3339's ABNF (appendix A): whole numbers of each unit
      const std::string d = "[0-9]{1,9}";
      const std::string time =
          absl::StrCat("T(?:", d, "H(?:", d, "M(?:", d, "S)?)?|", d, "M(?:", d, "S)?|", d, "S)");
      const std::string date =
          absl::StrCat("(?:", d, "Y(?:", d, "M(?:", d, "D)?)?|", d, "M(?:", d, "D)?|", d, "D)");
      return absl::StrCat("P(?:", d, "W|", date, "(?:", time, ")?|", time, ")");
    }
    if (!f.is_string()) return Error(absl::StrCat("format ", f.dump(), " is not a string"));
    return Error(absl::StrCat("format ", f.dump(),
                              " is not served (date, time, date-time, duration, email, "
                              "hostname, uri, uuid, ipv4 and ipv6 are)"));
  }

  // A bound keyword's number, or nullopt when absent.
  absl::StatusOr<std::optional<double>> Bound(const Json& s, const char* key) const {
    const auto it = s.find(key);
    if (it == s.end()) return std::nullopt;
    if (!it->is_number()) return Error(absl::StrCat(key, " is a number"));
    return it->get<double>();
  }

  absl::Status Integer(const Json& s, std::string& out) {
    std::optional<int64_t> lo;
    std::optional<int64_t> hi;
    for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      ASSIGN_OR_RETURN(const std::optional<double> b, Bound(s, key));
      if (!b) continue;
      if (std::abs(*b) > static_cast<double>(kMaxIntegerBound)) {
        return Error(absl::StrCat(key, " ", *b, " is beyond the +-10^15 served"));
      }
      const std::string_view k = key;
      if (k == "minimum" || k == "exclusiveMinimum") {
        const int64_t v = k == "minimum" ? static_cast<int64_t>(std::ceil(*b))
                                         : static_cast<int64_t>(std::floor(*b)) + 1;
        lo = lo ? std::max(*lo, v) : v;
      } else {
        const int64_t v = k == "maximum" ? static_cast<int64_t>(std::floor(*b))
                                         : static_cast<int64_t>(std::ceil(*b)) - 1;
        hi = hi ? std::min(*hi, v) : v;
      }
    }
    if (lo && hi && *lo > *hi) return Error("the bounds leave no integer");
    if (const auto it = s.find("multipleOf"); it != s.end()) {
      const double k = it->is_number() ? it->get<double>() : 0;
      if (!(k >= 1 && k <= kMaxMultipleOf) || std::trunc(k) != k) {
        return Error(absl::StrCat("multipleOf ", Clip(it->dump(), 32),
                                  " on an integer is served as a whole number from 1 to ",
                                  kMaxMultipleOf));
      }
      if (k > 1) return Multiples(static_cast<int64_t>(k), lo, hi, out);
    }
    if (!lo && !hi) {
      absl::StrAppend(&out, "-?", kUnsignedInteger);
      return absl::OkStatus();
    }
    std::vector<std::string> alts;
    EachSideOfZero(lo, hi, [&](int64_t from, std::optional<int64_t> to, const char* sign) {
      alts.push_back(absl::StrCat(sign, to ? UnsignedRange(from, *to) : UnsignedFrom(from)));
      return absl::OkStatus();
    }).IgnoreError();  // (the writer never fails)
    absl::StrAppend(&out, "(?:", absl::StrJoin(alts, "|"), ")");
    return absl::OkStatus();
  }

  // Multiples of k > 1 within [lo, hi] (either end may be absent): each side of 0 as its
  // multiples listed, when it holds at most kMaxListedMultiples, or, unbounded from 0 on,
  // by its last digits, when k divides 1000.
  absl::Status Multiples(int64_t k, std::optional<int64_t> lo, std::optional<int64_t> hi,
                         std::string& out) {
    std::vector<std::string> alts;
    // |x| in [a, b] (b absent: unbounded) for x >= 0, or x < 0 with a '-' before it.
    auto side = [&](int64_t a, std::optional<int64_t> b, const char* sign) -> absl::Status {
      const int64_t first = (a + k - 1) / k * k;  // a >= 0
      if (b) {
        if (first > *b) return absl::OkStatus();
        const int64_t count = (*b - first) / k + 1;
        if (count > kMaxListedMultiples) {
          return Error(absl::StrCat("multipleOf ", k, " leaves ", count, " integers in the range; ",
                                    "served: at most ", kMaxListedMultiples,
                                    ", or a range unbounded from 0 on when ", k, " divides 1000"));
        }
        for (int64_t m = first; m <= *b; m += k) alts.push_back(absl::StrCat(sign, m));
        return absl::OkStatus();
      }
      int digits = 1;  // the last digits that tell a multiple: k divides 10^digits
      int64_t power = 10;
      while (power % k != 0 && digits < 3) {
        ++digits;
        power *= 10;
      }
      if (power % k != 0 || a > 1) {
        return Error(
            absl::StrCat("multipleOf ", k, " on a range unbounded ",
                         *sign == '-' ? "below" : "above", " is served when it starts at 0 and ", k,
                         " divides 1000; bound it to at most ", kMaxListedMultiples, " multiples"));
      }
      std::vector<std::string> shorts;  // multiples of fewer than digits + 1 digits
      std::vector<std::string> endings;
      for (int64_t m = first; m < power; m += k) shorts.push_back(absl::StrCat(m));
      for (int64_t m = 0; m < power; m += k) {
        std::string e = absl::StrCat(m);
        endings.push_back(std::string(static_cast<size_t>(digits) - e.size(), '0') + e);
      }
      shorts.push_back(
          absl::StrCat("[1-9][0-9]{0,", 15 - digits, "}(?:", absl::StrJoin(endings, "|"), ")"));
      alts.push_back(absl::StrCat(sign, "(?:", absl::StrJoin(shorts, "|"), ")"));
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(EachSideOfZero(lo, hi, side));
    if (alts.empty()) return Error("the bounds leave no multiple of multipleOf");
    absl::StrAppend(&out, "(?:", absl::StrJoin(alts, "|"), ")");
    return absl::OkStatus();
  }

  // A number bound times 10^kBoundedNumberFraction, exactly: InvalidArgument unless it is
  // within +-10^9 with at most kBoundedNumberFraction digits after the point (its shortest
  // decimal form).
  absl::StatusOr<int64_t> ScaledBound(const char* key, double b) const {
    if (!(std::abs(b) < 1e9)) {
      return Error(absl::StrCat(key, " ", b, " on a number is beyond the +-10^9 served"));
    }
    char buf[64];
    const std::to_chars_result written =
        std::to_chars(buf, buf + sizeof(buf), b, std::chars_format::fixed);
    if (written.ec != std::errc()) {  // more than 64 characters: a tiny bound, 1e-100
      return Error(absl::StrCat(key, " ", b, " on a number has more than ", kBoundedNumberFraction,
                                " digits after the point (served: ", kBoundedNumberFraction, ")"));
    }
    std::string_view text(buf, static_cast<size_t>(written.ptr - buf));
    const bool negative = text.starts_with("-");
    if (negative) text.remove_prefix(1);
    const size_t point = text.find('.');
    const std::string_view whole = text.substr(0, point);
    const std::string_view fraction =
        point == std::string_view::npos ? std::string_view() : text.substr(point + 1);
    if (fraction.size() > static_cast<size_t>(kBoundedNumberFraction)) {
      return Error(absl::StrCat(key, " ", std::string(text), " on a number has more than ",
                                kBoundedNumberFraction,
                                " digits after the point (served: ", kBoundedNumberFraction, ")"));
    }
    int64_t v = 0;
    if (!absl::SimpleAtoi(absl::string_view(whole.data(), whole.size()), &v)) {
      return absl::InternalError("a bound's digits");
    }
    for (int i = 0; i < kBoundedNumberFraction; ++i) {
      v = v * 10 + (static_cast<size_t>(i) < fraction.size() ? fraction[i] - '0' : 0);
    }
    return negative ? -v : v;
  }

  absl::Status Number(const Json& s, std::string& out) {
    if (s.contains("multipleOf")) {
      return Error("multipleOf is served on integers only (\"type\": \"integer\")");
    }
    ASSIGN_OR_RETURN(const std::optional<double> min, Bound(s, "minimum"));
    bool bounded = min.has_value() && *min != 0;
    for (const char* key : {"exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      bounded |= s.contains(key);
    }
    if (!bounded) {  // any number, or any number >= 0: every JSON form (16 digits a part)
      absl::StrAppend(&out, min ? "" : "-?", kUnsignedInteger, kFractionExponent);
      return absl::OkStatus();
    }
    // Bounded: n / 10^kBoundedNumberFraction for an integer n in [lo, hi] (exact: the bounds
    // have no more fraction digits than the output).
    int64_t lo = -kBoundedNumberTop;
    int64_t hi = kBoundedNumberTop;
    for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      ASSIGN_OR_RETURN(const std::optional<double> b, Bound(s, key));
      if (!b) continue;
      ASSIGN_OR_RETURN(const int64_t v, ScaledBound(key, *b));
      const std::string_view k = key;
      if (k == "minimum") lo = std::max(lo, v);
      if (k == "exclusiveMinimum") lo = std::max(lo, v + 1);
      if (k == "maximum") hi = std::min(hi, v);
      if (k == "exclusiveMaximum") hi = std::min(hi, v - 1);
    }
    std::vector<std::string> alts;
    EachSideOfZero(lo, hi, [&](int64_t from, std::optional<int64_t> to, const char* sign) {
      alts.push_back(*sign == '-' ? absl::StrCat("-(?:", ScaledRange(from, *to), ")")
                                  : ScaledRange(from, *to));
      return absl::OkStatus();
    }).IgnoreError();  // (the writer never fails; both ends are given)
    if (alts.empty()) return Error("the bounds leave no number");
    absl::StrAppend(&out, "(?:", absl::StrJoin(alts, "|"), ")");
    return absl::OkStatus();
  }

  const Json& root_;
  std::vector<std::string> path_;
  std::map<std::string, int> active_refs_;  // $ref targets being written, how many deep
  const int recursion_;
  bool recursive_ = false;
  absl::flat_hash_map<std::string, Resolved> resolved_;  // by $ref target
  // What a pattern's check found: whether its matches need no JSON escape, are ASCII, and
  // their fewest and most bytes (-1: no bound).
  struct PatternFacts {
    bool plain;
    bool ascii;
    int64_t fewest;
    int64_t most;
  };
  std::map<std::string, PatternFacts> patterns_;
  // Formats' forms beside a length: the fewest and most characters of a form.
  std::map<std::string, std::pair<int64_t, int64_t>> format_lengths_;
  int depth_ = 0;
  size_t& work_;
};

}  // namespace

namespace {

absl::StatusOr<Json> ParseSchema(std::string_view schema) {
  if (schema.size() > static_cast<size_t>(kMaxJsonSchemaBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("the JSON schema is ", schema.size(),
                                                   " bytes; at most ", kMaxJsonSchemaBytes));
  }
  RETURN_IF_ERROR(CheckUntrustedJson(schema, "the JSON schema"));
  Json root = Json::parse(schema, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError("the JSON schema is not a JSON text");
  }
  return root;
}

// `schema` written and, when `compile`, compiled, its recursive references followed as deep
// as fits: kMaxJsonSchemaRecursion deep first, less after an error (of size, most likely), to
// kMinJsonSchemaRecursion; a schema that is not recursive is written once. The attempts share
// one kMaxJsonSchemaWork. The last error when none fits.
absl::StatusOr<std::pair<std::string, std::shared_ptr<const CompiledRegex>>> Write(
    std::string_view schema, bool compile) {
  ASSIGN_OR_RETURN(const Json root, ParseSchema(schema));
  absl::Status last;
  size_t work = 0;
  for (int recursion = kMaxJsonSchemaRecursion; recursion >= kMinJsonSchemaRecursion; --recursion) {
    Writer writer(root, recursion, work);
    std::string regex;
    last = writer.Value(root, regex);
    std::shared_ptr<const CompiledRegex> compiled;
    if (last.ok() && compile) {
      absl::StatusOr<std::shared_ptr<const CompiledRegex>> re = CompiledRegex::CompileWritten(
          regex,
          {.guide = "json_schema",
           .text = "the schema",
           .hint = "fewer properties, alternatives or references; smaller maxLength or maxItems",
           .scan_hint = "fewer optional properties or alternatives, shorter strings",
           .max_nesting = kJsonSchemaNesting,
           .max_states = kMaxJsonSchemaStates});
      last = re.status();
      if (re.ok()) compiled = *std::move(re);
      if (!re.ok() && writer.recursive() &&
          absl::StrContains(re.status().message(), "matches no string")) {
        return absl::InvalidArgumentError(
            absl::StrCat(re.status().message(),
                         " (a recursive $ref with no way out: each level requires the next one)"));
      }
    }
    if (last.ok()) return std::pair{std::move(regex), std::move(compiled)};
    if (!writer.recursive()) break;
  }
  return last;
}

}  // namespace

absl::StatusOr<std::string> JsonSchemaRegex(std::string_view schema) {
  ASSIGN_OR_RETURN(auto written, Write(schema, /*compile=*/false));
  return std::move(written.first);
}

absl::StatusOr<std::shared_ptr<const CompiledRegex>> CompileJsonSchema(std::string_view schema) {
  ASSIGN_OR_RETURN(auto written, Write(schema, /*compile=*/true));
  return std::move(written.second);
}

}  // namespace llmint8::coordinator
