/* unicode.h - the UTF-8 and Unicode character data the tokenizers need.
 *
 * The tables (common/unicode_tables.inc) are generated from Python's unicodedata by
 * tools/gen_unicode_tables.py, so character classes, lower-casing and NFD agree with the
 * Python reference tokenizers (HF's BertTokenizer uses the same data). */
#ifndef LION_UNICODE_H
#define LION_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* The character classes BERT's BasicTokenizer distinguishes. */
enum uclass {
    UCLASS_OTHER = 0,
    UCLASS_C,  /* Cc Cf Cs Co Cn: control, format, unassigned */
    UCLASS_ZS, /* space separator */
    UCLASS_P,  /* any punctuation category */
    UCLASS_MN  /* non-spacing mark: what accent stripping removes */
};

/* Decodes one well-formed UTF-8 character (shortest form, no surrogates, <= U+10FFFF) at
 * s[0..n). Returns its length in bytes, or 0 when the bytes are malformed or n == 0. */
size_t utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out (4 bytes room) and returns the length. */
size_t utf8_encode(uint32_t cp, char *out);

enum uclass unicode_class(uint32_t cp);
/* Canonical combining class (0 for starters). */
int unicode_ccc(uint32_t cp);
/* Python's str.lower() of one character: writes up to 3 code points, returns how many. */
int unicode_lower(uint32_t cp, uint32_t out[3]);
/* Full canonical decomposition of one character (Hangul included), unordered marks as the
 * data gives them; writes up to UNICODE_NFD_MAX code points and returns how many. */
#define UNICODE_NFD_MAX 8
int unicode_decompose(uint32_t cp, uint32_t out[UNICODE_NFD_MAX]);
/* Canonical ordering of combining marks in place, completing NFD after decomposition. */
void unicode_canonical_order(uint32_t *cps, size_t n);

#endif
