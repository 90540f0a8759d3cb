/* web.c - the web page's files (web/): from the copy built into the binary, or from
 * --web-root while the page is being edited. Only plain names of files directly in the
 * folder are served ("/app.js"), never a path that climbs out of it. */
#include <stdlib.h>
#include <string.h>

#include "file_read.h"
#include "gateway_impl.h"
#include "web_assets.h"

static const char *content_type_of(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    if (!strcmp(dot, ".png")) return "image/png";
    return "application/octet-stream";
}

/* "/name.ext" with a name of letters, digits, '-', '_' and '.', not starting with '.'. */
static int plain_name(const char *path) {
    if (path[0] != '/' || path[1] == '.' || !path[1]) return 0;
    for (const char *p = path + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return 0;
    return 1;
}

int web_serve(gateway *gw, http_conn *c, const char *path) {
    if (!strcmp(path, "/")) path = "/index.html";
    if (!plain_name(path)) return 0;
    if (gw->cfg.web_root) {
        char file[2048];
        snprintf(file, sizeof file, "%s%s", gw->cfg.web_root, path);
        size_t len = 0;
        char *data = NULL;
        lion_status st;
        if (file_read_all(file, 4u << 20, "web page file", &data, &len, &st) != 0) return 0;
        http_conn_respond(c, 200, content_type_of(path), data, len, 0);
        free(data);
        return 1;
    }
    for (int i = 0; i < web_assets_count; i++)
        if (!strcmp(web_assets[i].path, path)) {
            http_conn_respond(c, 200, web_assets[i].content_type, (const char *)web_assets[i].data, web_assets[i].len, 0);
            return 1;
        }
    return 0;
}
