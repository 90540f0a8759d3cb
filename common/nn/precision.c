#include "precision.h"

#include <stdio.h>
#include <string.h>

#include "cpu_features.h"
#include "onednn_matmul.h"

static const char *const names[PRECISION_COUNT] = {"auto", "f32", "bf16"};

const char *precision_name(lion_precision p) { return (unsigned)p < PRECISION_COUNT ? names[p] : "?"; }

int precision_from_name(const char *name, lion_precision *out) {
    for (int i = 0; i < PRECISION_COUNT; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (lion_precision)i;
            return 0;
        }
    return -1;
}

lion_precision precision_resolve(lion_precision asked, int native_bf16, unsigned supported, const char **why) {
    const char *because;
    lion_precision p;
    const int has_bf16 = (supported & PRECISION_BIT(PRECISION_BF16)) != 0;
    if (asked == PRECISION_BF16) {
        p = has_bf16 ? PRECISION_BF16 : PRECISION_F32;
        because = has_bf16 ? (native_bf16 ? "asked" : "asked; no native bf16: bf16 weights widened to f32 for the products")
                           : "asked bf16: this stage has no bf16 path";
    } else if (asked == PRECISION_F32) {
        p = PRECISION_F32;
        because = "asked";
    } else {
        p = native_bf16 && has_bf16 ? PRECISION_BF16 : PRECISION_F32;
        because = !native_bf16 ? "auto: no native bf16"
                  : has_bf16   ? "auto: native bf16"
                               : "auto: native bf16, but this stage has no bf16 path";
    }
    if (why) *why = because;
    return p;
}

char *precision_describe(char *buf, size_t len, lion_precision p, const char *why) {
    snprintf(buf, len, "precision %s (%s; kernels %s, onednn %s)", precision_name(p), why ? why : "asked",
             cpu_isa_name(), onednn_isa_name());
    return buf;
}
