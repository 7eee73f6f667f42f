// An ICU data library with no data, to stand in for libicudata.so.<major> (30 MB, most of the
// GPU bundle) where only ICU's built-in character properties are used: the tokenizer's
// General_Category and White_Space lookups (coordinator/tokenizer.cc) are compiled into
// libicuuc itself and never open a data item. What libicuuc needs of this library is the one
// symbol U_ICUDATA_ENTRY_POINT (icudt<major>_dat): a common-data header ("ToCP", a table of
// contents by pointer) that lists no items. A lookup of a data item (a converter, a locale, a
// break iterator) then fails with U_MISSING_RESOURCE_ERROR instead of finding it.
//
// Built by scripts/gpu-bundle.sh against this machine's ICU headers, so the symbol's version
// is the one the bundled libicuuc wants; checked there by running the tokenizer tests with it.
#include <stdint.h>

#include <unicode/udata.h>
#include <unicode/utypes.h>

struct EmptyCommonData {
  uint16_t header_size;  // bytes before `count`
  uint8_t magic1;        // 0xda, 0x27: ICU's data header
  uint8_t magic2;
  UDataInfo info;
  char padding[8];
  uint32_t count;  // items in the table of contents: none
  uint32_t reserved;
  const void* toc[2];  // (name, data) pairs; one spare, unread
};

__attribute__((visibility("default"), aligned(16))) const struct EmptyCommonData
    U_ICUDATA_ENTRY_POINT = {
        .header_size = 32,
        .magic1 = 0xda,
        .magic2 = 0x27,
        .info =
            {
                .size = sizeof(UDataInfo),
                .isBigEndian = U_IS_BIG_ENDIAN,
                .charsetFamily = U_CHARSET_FAMILY,
                .sizeofUChar = sizeof(UChar),
                .dataFormat = {'T', 'o', 'C', 'P'},
                .formatVersion = {1, 0, 0, 0},
            },
        .count = 0,
};
