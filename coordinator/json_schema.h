// guided_json (vLLM's; OpenAI's response_format json_schema): the generated text is one JSON
// value valid under a JSON Schema. The schema is written out as a regular expression whose
// whole matches are such JSON texts, and compiled as guided_regex's patterns are
// (guided_regex.h): sequences follow it through the same lazily built DFA.
//
//   ASSIGN_OR_RETURN(std::shared_ptr<const CompiledRegex> re,
//                    CompileJsonSchema(R"({"type": "object", "properties": {...}})"));
//
// Served (the keywords of JSON Schema 2020-12 and draft 7 that OpenAI's structured outputs and
// pydantic's models use):
//   type (one or a list), enum and const (beside type only; numbers within 2^53), anyOf,
//   oneOf (read as anyOf: when two alternatives overlap a value may match both), allOf of one
//   schema, $ref to "#" or a JSON pointer into the same document ("#/$defs/Name",
//   "#/definitions/Name", percent-escapes decoded; a recursive one, as a tree's or a linked
//   list's, is followed at most kMaxJsonSchemaRecursion deep);
//   objects: properties (false: absent), required, additionalProperties;
//   arrays: items, prefixItems (at most kMaxJsonSchemaPrefixItems), minItems, maxItems;
//   strings: pattern (guided_regex.h's syntax; a search, anchored by a leading ^ and a trailing
//     $, over the string's value: where a match may hold '"', '\\' or a control character,
//     as .+, \S+ and [^,]+ may, those are taken in their JSON escapes, json_string_pattern.h;
//     \D \W \S are the other ASCII characters only, \S not 0x1C-0x1F either; \d \w \s and
//     \D \W \S beside a [^...] are refused, since they are ASCII's here and Unicode's to
//     Python's re), minLength, maxLength (characters; at most kMaxJsonSchemaCount each;
//     beside a pattern, of any size, when the pattern is anchored at both ends, its matches
//     ASCII and needing no escape, and every match within them), format (beside minLength
//     or maxLength, of any size, when every form of the format is within them, as pydantic's
//     AnyUrl's maxLength 2083 is):
//     date, time, date-time (RFC 3339's forms, dates of the calendar, no year 0 and no leap
//     second: what Python's datetime and pydantic accept),
//     duration (RFC 3339's ABNF: whole numbers of at most 9 digits), email (at most 4
//     dot-atoms of at most 15 letters, digits and _%+-, '@', at most 3 RFC 1123 labels of at
//     most 32 and a top-level name of 2 to 24 letters), hostname (2 to 4 RFC 1123 labels of
//     at most 62), uri (http and https URLs of RFC 3986's characters, at most 2,011 of them;
//     a host name whose last label starts with a letter or a dotted IPv4 address, a port up
//     to 65535: what WHATWG URL parsers and pydantic's AnyUrl accept), uuid, ipv4, ipv6;
//     the other formats of JSON Schema are refused; formats it does not define
//     (pydantic's password, binary) are annotations (the string is served as without them);
//   integers: minimum, maximum, exclusiveMinimum, exclusiveMaximum (within +-10^15),
//     multipleOf (a whole step up to 10^6: the multiples listed where the range holds at most
//     256, else from 0 on, unbounded, by their last digits when the step divides 1000);
//   numbers: minimum, maximum, exclusiveMinimum, exclusiveMaximum (of magnitude under 10^9,
//     at most 6 digits after the point: pydantic's ge / gt / le / lt);
//   annotations, which change nothing: title, description, default, examples, $schema, $id
//   (at the root only), $comment, $defs, definitions, deprecated, readOnly, writeOnly,
//   discriminator.
// The output is never wider than the schema (but for oneOf, read as anyOf), and narrower in
// these ways:
//   - an array with prefixItems and no items holds no more items than minItems needs;
//   - an object holds the schema's properties only, in the order its "properties" lists them
//     (each optional one present or not); an object without "properties" holds any string
//     keys with values of its additionalProperties' schema;
//   - whitespace as compact, spaced and pretty-printed JSON write it: after '{', '[' and ','
//     and before '}' and ']' nothing, one space, or a line break and an indent of at most
//     kMaxJsonSchemaIndent spaces or tabs; after ':' nothing or one space; none before ':'
//     or ',' or around the value (a weak model given freer whitespace spends its tokens on
//     it);
//   - a string's \u escapes are of characters of the Basic Multilingual Plane (no surrogate
//     halves: the others are written as UTF-8), so each is one character as lengths count;
//   - integers have at most 16 digits, fractions 16, exponents 2 (unbounded integers fit
//     int64 and a double's exact range; every number is a finite double); a number with bounds (but
//     minimum 0 alone) is a decimal of at most 9 digits before the point and 6 after it, with no
//     exponent (at most 15 significant digits: two such decimals are two doubles, so a validator
//     comparing doubles agrees with the exact comparison made here);
//   - values nested deeper than kMaxJsonSchemaRecursion through a recursive $ref;
//   - a value of any type ({}, true, an array without items, an object without properties or
//     additionalProperties) nests at most kJsonSchemaAnyDepth containers deep.
// Refused, InvalidArgument naming the keyword and where it is (a JSON pointer; the client's
// text in a message clipped): every other keyword (not, if/then/else,
// patternProperties, minProperties, multipleOf on numbers, uniqueItems true, ...) where the output
// could take it (a subschema it never takes, such as additionalProperties beside properties, is not
// read), other formats, a schema that matches nothing (a recursion with no way out too),
// schemas over kMaxJsonSchemaBytes, nested over kMaxJsonSchemaDepth, or written out over
// kMaxJsonSchemaRegexBytes (or kMaxJsonSchemaWork bytes written and looked at on the way)
// or guided_regex's automaton limits.
#ifndef LLMINT8_COORDINATOR_JSON_SCHEMA_H_
#define LLMINT8_COORDINATOR_JSON_SCHEMA_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "coordinator/guided_regex.h"

namespace llmint8::coordinator {

inline constexpr int kMaxJsonSchemaBytes = 65536;
inline constexpr int kMaxJsonSchemaDepth = 32;
inline constexpr int kMaxJsonSchemaCount = 256;  // minLength, maxLength, minItems, maxItems
inline constexpr int kMaxJsonSchemaPrefixItems = 64;
// How deep the groups of the written pattern may nest: each schema level opens a few, each
// item of prefixItems one more, and each optional property before an object's first required
// one. The parser and compiler recurse that deep: 1024 levels needed 0.5-1 MiB of stack here
// (json_schema_test under ulimit -s), and overflowed AddressSanitizer's 8 MiB main thread.
inline constexpr int kJsonSchemaNesting = 256;
// The NFA states the written pattern may take, 16 bytes each. As CompiledRegex::nfa_states()
// counts them (2026-12-01): a string's character takes 45, one more null in a tuple (its
// comma, whitespace gap and value) 46, a string of maxLength 256 11,525, a value of any type
// 5,210 (BM_JsonSchemaCompile/1).
inline constexpr int kMaxJsonSchemaStates = 65536;
inline constexpr int kMaxJsonSchemaRegexBytes = 1 << 20;
// The bytes the writer may write at all levels and look at in const and enum values together
// (a pattern written once is counted at each level of the schema that holds it), over all
// its attempts at a recursive schema's depths.
inline constexpr int kMaxJsonSchemaWork = 8 << 20;
inline constexpr int kJsonSchemaAnyDepth = 2;
// A recursive $ref (a tree, a linked list) is followed at most this deep, and at least
// kMinJsonSchemaRecursion deep where the deeper writing does not fit the limits above (else
// the schema is refused): values nested deeper are not produced. The depth counts entries
// through one $ref text: a model entered first as the root ($ref "#") has one level more, and
// models that refer to each other count each their own.
inline constexpr int kMaxJsonSchemaRecursion = 4;
inline constexpr int kMinJsonSchemaRecursion = 2;
inline constexpr int kMaxJsonSchemaIndent = 16;

// The regular expression (guided_regex.h's syntax, and "(?!)", which only the server's own
// patterns may hold: CompiledRegex::CompileWritten) whose whole matches are the JSON texts
// the output may be, recursion followed as deep as the writing fits, or InvalidArgument as
// above.
absl::StatusOr<std::string> JsonSchemaRegex(std::string_view schema);

// The schema written and compiled, recursion followed as deep as both fit (so possibly less
// deep than JsonSchemaRegex writes it). Errors start "json_schema: " (then the JSON pointer of the
// place at fault, where there is one) or "the JSON schema": the names of every field that holds a
// schema (gRPC's Guide.json_schema, the OpenAI API's response_format json_schema, vLLM's
// guided_json).
absl::StatusOr<std::shared_ptr<const CompiledRegex>> CompileJsonSchema(std::string_view schema);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_JSON_SCHEMA_H_
