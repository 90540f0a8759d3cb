/* web_assets.h - the web page's files built into the gateway (web_assets.c is generated from
 * web/ by embed_web.cmake at build time). */
#ifndef LION_WEB_ASSETS_H
#define LION_WEB_ASSETS_H

#include <stddef.h>

typedef struct web_asset {
    const char *path;         /* "/index.html" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
} web_asset;

extern const web_asset web_assets[]; /* web_assets_count of them, then a NULL path */
extern const int web_assets_count;

#endif
