/* protocol.c - the names of protocol.h. */
#include "protocol.h"

#include <string.h>

const char *lion_kind_name(int kind) {
    switch (kind) {
    case LION__KIND__JOB: return "JOB";
    case LION__KIND__RESULT: return "RESULT";
    case LION__KIND__ERROR: return "ERROR";
    case LION__KIND__READY: return "READY";
    case LION__KIND__HEARTBEAT: return "HEARTBEAT";
    case LION__KIND__BYE: return "BYE";
    case LION__KIND__PARTIAL: return "PARTIAL";
    case LION__KIND__CANCEL: return "CANCEL";
    default: return "?";
    }
}

static const char *const stage_names[LION_STAGE_SLOTS] = {
    [LION__STAGE__VISION] = "vision",
    [LION__STAGE__TAGGER] = "tagger",
    [LION__STAGE__AGGREGATOR] = "aggregator",
    [LION__STAGE__LLM] = "llm",
};

const char *lion_stage_name(int stage) {
    return stage >= LION_STAGE_FIRST && stage <= LION_STAGE_LAST ? stage_names[stage] : "?";
}

int lion_stage_from_name(const char *name) {
    for (int s = LION_STAGE_FIRST; name && s <= LION_STAGE_LAST; s++)
        if (strcmp(name, stage_names[s]) == 0) return s;
    return 0;
}
