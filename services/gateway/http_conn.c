/* http_conn.c - HTTP/1.1 connections on libuv, parsed by http-parser.
 *
 * One request at a time per connection: when a request is complete the parser is paused
 * until its answer is written; bytes read meanwhile (a pipelined next request) wait in
 * `pending`, up to a bound past which reading stops. Reading goes on while a request is
 * answered so that a client that leaves (EOF, reset) is seen at once: its request is
 * cancelled through the pipeline (request_cancel). Answers resume the connection from the
 * write callback, never from inside the code that answered, so that no caller sees a new
 * request start under it. An answer is whole (http_conn_respond) or streamed in chunks
 * (http_conn_stream_*: server-sent events). Malformed HTTP and broken limits get a JSON
 * error and the connection is closed. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "gateway_impl.h"
#include "log.h"

/* Connections beyond --max-connections (up to PROBE_RESERVE more) are still read briefly,
 * so that a health probe is answered while the gateway is full. */
#define PROBE_RESERVE 16
#define PROBE_READ_MS 1000
#define MAX_URL_BYTES 8192
#define MAX_HEADER_BYTES 65536
#define READ_CHUNK 65536

static http_parser_settings parser_settings;

static void conn_feed(http_conn *c, const char *data, size_t len);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_linger(http_conn *c);
static void over_capacity(http_conn *c);

static void on_close(uv_handle_t *h) {
    http_conn *c = h->data;
    free(c->url);
    free(c->body);
    free(c->pending);
    free(c);
}

/* Marks c closing and takes it off the gateway's lists; the handle is closed by the caller. */
static void conn_detach_all(http_conn *c) {
    c->closing = 1;
    if (c->req) { /* the client left before its answer: the pipeline drops the work */
        request *r = c->req;
        c->req = NULL;
        request_cancel(r);
    }
    gateway *gw = c->gw;
    if (!c->prev && gw->conns != c) return; /* never listed: answered 503 over the cap */
    if (c->prev) c->prev->next = c->next;
    else gw->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    gw->n_conns--;
}

static void conn_close(http_conn *c) {
    if (c->closing) return;
    conn_detach_all(c);
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

#define LINGER_US 2000000

static void on_linger_shutdown(uv_shutdown_t *req, int status) {
    if (status < 0 && status != UV_ECANCELED) conn_close(req->handle->data);
}

/* Closes after an answer that ends the connection without losing that answer: a client
 * still sending (a body refused as too large, a pipelined request) would get a reset for its
 * unread bytes, and a reset can destroy the answer before the client reads it. So: FIN
 * first, then what still arrives is read and dropped until the client closes or
 * LINGER_US pass (nginx's lingering close). */
static void conn_linger(http_conn *c) {
    if (c->lingering) return;
    c->lingering = 1;
    c->linger_until_us = clock_mono_us() + LINGER_US;
    if (uv_shutdown(&c->linger, (uv_stream_t *)&c->tcp, on_linger_shutdown) != 0) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    uv_close((uv_handle_t *)req->handle, on_close);
}

/* --- parser callbacks ---------------------------------------------------------------------- */

/* Remembers which limit broke; the parser then stops with an error that parse_failed answers. */
static int limit_error(http_conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int limit_error(http_conn *c, int status, const char *fmt, ...) {
    c->error_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error_message, sizeof c->error_message, fmt, ap);
    va_end(ap);
    return -1;
}

static int on_message_begin(http_parser *p) {
    http_conn *c = p->data;
    c->message_begin_us = clock_mono_us();
    c->authorization[0] = 0;
    c->url_len = c->body_len = c->header_bytes = c->header_field_len = 0;
    c->in_header_value = 0;
    c->content_type[0] = 0;
    c->expect_continue = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (c->url_len + len > MAX_URL_BYTES)
        return limit_error(c, 414, "the URL is longer than %d bytes", MAX_URL_BYTES);
    if (!c->url) c->url = malloc(MAX_URL_BYTES + 1);
    if (!c->url) return -1;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = 0;
    return 0;
}

static int count_header(http_conn *c, size_t len) {
    c->header_bytes += len;
    if (c->header_bytes > MAX_HEADER_BYTES)
        return limit_error(c, 431, "the headers are longer than %d bytes", MAX_HEADER_BYTES);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (count_header(c, len)) return -1;
    if (c->in_header_value) c->header_field_len = 0;
    c->in_header_value = 0;
    size_t room = sizeof c->header_field - 1 - c->header_field_len;
    size_t n = len < room ? len : room;
    memcpy(c->header_field + c->header_field_len, at, n);
    c->header_field_len += n;
    c->header_field[c->header_field_len] = 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (count_header(c, len)) return -1;
    c->in_header_value = 1;
    if (!strcasecmp(c->header_field, "content-type")) {
        size_t have = strlen(c->content_type), room = sizeof c->content_type - 1 - have;
        size_t n = len < room ? len : room;
        memcpy(c->content_type + have, at, n);
        c->content_type[have + n] = 0;
    } else if (!strcasecmp(c->header_field, "authorization")) {
        size_t have = strlen(c->authorization), room = sizeof c->authorization - 1 - have;
        size_t n = len < room ? len : room;
        memcpy(c->authorization + have, at, n);
        c->authorization[have + n] = 0;
    } else if (!strcasecmp(c->header_field, "expect") && len >= 12 && !strncasecmp(at, "100-continue", 12)) {
        c->expect_continue = 1;
    }
    return 0;
}

static void write_raw(http_conn *c, char *buf, size_t len, int close_after);

static int on_headers_complete(http_parser *p) {
    http_conn *c = p->data;
    size_t max = c->gw->cfg.max_body_bytes;
    if (p->content_length != ULLONG_MAX && p->content_length > max)
        return limit_error(c, 413, "the body is %zu bytes, the limit is %zu", (size_t)p->content_length, max);
    if (c->expect_continue) { /* curl waits for this before it sends a large body */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        char *b = malloc(sizeof cont - 1);
        if (b) {
            memcpy(b, cont, sizeof cont - 1);
            write_raw(c, b, sizeof cont - 1, -1);
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    size_t max = c->gw->cfg.max_body_bytes;
    if (c->body_len + len > max)
        return limit_error(c, 413, "the body is more than %zu bytes, the limit is %zu", c->body_len + len, max);
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len + 1) cap *= 2;
        char *b = realloc(c->body, cap);
        if (!b) return limit_error(c, 503, "no memory for a %zu-byte body", c->body_len + len);
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    c->body[c->body_len] = 0;
    return 0;
}

static int on_message_complete(http_parser *p) {
    http_conn *c = p->data;
    c->message_begin_us = 0;
    c->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1); /* conn_feed handles the request, outside the parser */
    return 0;
}

/* --- writing ------------------------------------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    char *buf;
    int close_after; /* 1: close, 0: next request, -1: an interim 100 Continue */
} write_req;

static void on_write(uv_write_t *w, int status) {
    write_req *wr = (write_req *)w;
    http_conn *c = w->handle->data;
    int close_after = wr->close_after;
    free(wr->buf);
    free(wr);
    if (c->closing) return;
    if (status < 0) { /* a failed write, even of a chunk, means the client is gone */
        conn_close(c);
        return;
    }
    if (close_after > 0) {
        conn_linger(c);
        return;
    }
    if (close_after < 0) return; /* an interim write: 100 Continue or a chunk of a streamed answer */
    /* the answer is out: the connection takes its next request */
    c->busy = 0;
    c->last_read_us = clock_mono_us();
    if (c->pending_len) {
        char *data = c->pending;
        size_t len = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        conn_feed(c, data, len);
        free(data);
    }
    if (!c->busy && !c->closing) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void write_raw(http_conn *c, char *buf, size_t len, int close_after) {
    write_req *wr = malloc(sizeof *wr);
    if (!wr) {
        free(buf);
        conn_close(c);
        return;
    }
    wr->buf = buf;
    wr->close_after = close_after;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(buf);
        free(wr);
        conn_close(c);
    }
}

static const char *reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 401: return "Unauthorized";
    case 408: return "Request Timeout";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

void http_conn_respond(http_conn *c, int status, const char *content_type, const char *body, size_t len,
                       int retry_after_s) {
    if (c->closing) return;
    c->req = NULL;
    metrics_count_request(&c->gw->metrics, c->route, status, (double)(clock_mono_us() - c->start_us) / 1e6);
    char head[512];
    char extra[128] = "";
    if (retry_after_s > 0) snprintf(extra, sizeof extra, "Retry-After: %d\r\n", retry_after_s);
    if (c->allow) snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "Allow: %s\r\n", c->allow);
    if (c->extra_header) snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "%s\r\n", c->extra_header);
    c->allow = c->extra_header = NULL;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n%s\r\n", status,
                     reason_phrase(status), content_type, len, c->keep_alive ? "keep-alive" : "close", extra);
    const size_t body_len = c->head_only ? 0 : len;
    char *buf = malloc((size_t)n + body_len);
    if (!buf) {
        conn_close(c);
        return;
    }
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, body, body_len);
    write_raw(c, buf, (size_t)n + body_len, !c->keep_alive);
}

int http_status_of(int code) {
    switch (code) {
    case LION_EINVAL:
    case LION_EFORMAT: return 400;
    case LION_ETOOBIG: return 413;
    case LION_ENOTFOUND: return 404;
    case LION_ETIMEOUT: return 504;
    case LION_ENOMEM:
    case LION_EUNAVAILABLE: return 503;
    case LION_EIO: return 502;
    case LION_ECANCELED: return 499; /* nginx's "client closed request": nobody reads it */
    case LION_EDENIED: return 401;
    default: return 500;
    }
}

/* A streamed answer: chunked transfer encoding, so the connection stays usable after it. */
void http_conn_stream_begin(http_conn *c, int status, const char *content_type) {
    if (c->closing || c->streaming) return;
    c->streaming = 1;
    c->stream_status = status;
    char head[384];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                     "Connection: %s\r\n\r\n",
                     status, reason_phrase(status), content_type, c->keep_alive ? "keep-alive" : "close");
    char *buf = malloc((size_t)n);
    if (!buf) {
        conn_close(c);
        return;
    }
    memcpy(buf, head, (size_t)n);
    write_raw(c, buf, (size_t)n, -1);
}

void http_conn_stream_write(http_conn *c, const char *data, size_t len) {
    if (c->closing || !c->streaming || len == 0) return;
    char size_line[24];
    int n = snprintf(size_line, sizeof size_line, "%zx\r\n", len);
    char *buf = malloc((size_t)n + len + 2);
    if (!buf) {
        conn_close(c);
        return;
    }
    memcpy(buf, size_line, (size_t)n);
    memcpy(buf + n, data, len);
    memcpy(buf + n + len, "\r\n", 2);
    write_raw(c, buf, (size_t)n + len + 2, -1);
}

void http_conn_stream_end(http_conn *c) {
    if (c->closing || !c->streaming) return;
    c->streaming = 0;
    c->req = NULL;
    metrics_count_request(&c->gw->metrics, c->route, c->stream_status, (double)(clock_mono_us() - c->start_us) / 1e6);
    static const char last[] = "0\r\n\r\n";
    char *buf = malloc(sizeof last - 1);
    if (!buf) {
        conn_close(c);
        return;
    }
    memcpy(buf, last, sizeof last - 1);
    write_raw(c, buf, sizeof last - 1, !c->keep_alive);
}

/* --- reading ------------------------------------------------------------------------------- */

static void handle_message(http_conn *c) {
    c->busy = 1; /* reading goes on (a client that leaves is seen); parsing waits */
    c->start_us = clock_mono_us();
    if (!c->url) c->url = calloc(1, MAX_URL_BYTES + 1);
    if (!c->url) {
        conn_close(c);
        return;
    }
    char *q = strchr(c->url, '?');
    if (q) *q++ = 0; /* the path routes; the query stays for the handler (/readyz?model=) */
    c->route = api_route_of(c->url);
    c->head_only = c->parser.method == HTTP_HEAD;
    if (c->probe_only && strcmp(c->url, "/healthz") != 0 && strcmp(c->url, "/readyz") != 0) {
        over_capacity(c);
        return;
    }
    if (c->parser.http_major != 1 || c->parser.http_minor > 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "HTTP/%u.%u is not supported (HTTP/1.0 and HTTP/1.1 are)", c->parser.http_major,
                 c->parser.http_minor);
        c->keep_alive = 0;
        c->route = API_ROUTES;
        api_respond_error(c->gw, c, 505, LION_EINVAL, msg);
        return;
    }
    http_request_view v = {.method = (int)c->parser.method,
                           .path = c->url,
                           .query = q ? q : "",
                           .body = c->body ? c->body : "",
                           .body_len = c->body_len,
                           .content_type = c->content_type};
    api_handle(c->gw, c, &v);
}

static void parse_failed(http_conn *c, enum http_errno e) {
    c->busy = 1;
    c->keep_alive = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->start_us = clock_mono_us();
    c->route = API_ROUTES;
    if (c->error_status) {
        int code = c->error_status == 503 ? LION_ENOMEM : LION_ETOOBIG;
        api_respond_error(c->gw, c, c->error_status, code, c->error_message);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "malformed HTTP request: %s (%s)", http_errno_description(e), http_errno_name(e));
    api_respond_error(c->gw, c, 400, LION_EINVAL, msg);
}

/* Bytes of pipelined requests held while one is answered: one more whole request. */
static size_t max_pending(const http_conn *c) { return c->gw->cfg.max_body_bytes + MAX_HEADER_BYTES + MAX_URL_BYTES; }

static void conn_feed(http_conn *c, const char *data, size_t len) {
    while (!c->closing && len > 0) {
        if (c->busy) { /* keep the rest for when the answer is out */
            if (c->pending_len + len > max_pending(c)) uv_read_stop((uv_stream_t *)&c->tcp); /* back-pressure */
            char *p = realloc(c->pending, c->pending_len + len);
            if (!p) {
                conn_close(c);
                return;
            }
            memcpy(p + c->pending_len, data, len);
            c->pending = p;
            c->pending_len += len;
            return;
        }
        size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
        data += n;
        len -= n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            handle_message(c);
        } else if (e != HPE_OK) {
            parse_failed(c, e);
            return;
        } else if (n == 0) {
            return;
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    buf->base = malloc(READ_CHUNK);
    buf->len = buf->base ? READ_CHUNK : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    http_conn *c = s->data;
    c->last_read_us = clock_mono_us();
    if (c->lingering) { /* the answer is out: drop what comes until the client closes */
        if (nread < 0) conn_close(c);
        free(buf->base);
        return;
    }
    if (nread > 0) conn_feed(c, buf->base, (size_t)nread);
    else if (nread < 0) {
        /* EOF in the middle of a request is malformed HTTP; between requests it is a goodbye */
        if (nread == UV_EOF && !c->busy && !c->closing) {
            http_parser_execute(&c->parser, &parser_settings, NULL, 0);
            enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
            if (e == HPE_PAUSED) {
                http_parser_pause(&c->parser, 0);
                c->keep_alive = 0;
                handle_message(c);
                free(buf->base);
                return;
            }
        }
        conn_close(c);
    }
    free(buf->base);
}

/* The 503 of a connection over --max-connections. */
static void over_capacity(http_conn *c) {
    gateway *gw = c->gw;
    gw->conns_rejected++;
    c->busy = 1;
    c->keep_alive = 0;
    c->route = API_ROUTES;
    c->start_us = clock_mono_us();
    char msg[128];
    snprintf(msg, sizeof msg, "too many connections: %d open, the limit is --max-connections %d", gw->n_conns,
             gw->cfg.max_connections);
    api_respond_error(gw, c, 503, LION_EUNAVAILABLE, msg);
}

static int same_client(const gateway *gw, const char *peer) {
    int n = 0;
    for (const http_conn *o = gw->conns; o; o = o->next) n += !strcmp(o->peer, peer);
    return n;
}

static void peer_name(http_conn *c) {
    struct sockaddr_storage a;
    int len = sizeof a;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&a, &len) != 0) return;
    if (a.ss_family == AF_INET) uv_ip4_name((const struct sockaddr_in *)&a, c->peer, sizeof c->peer);
    else if (a.ss_family == AF_INET6) uv_ip6_name((const struct sockaddr_in6 *)&a, c->peer, sizeof c->peer);
}

static void on_connection(uv_stream_t *server, int status) {
    gateway *gw = server->data;
    if (status < 0) return;
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->gw = gw;
    uv_tcp_init(gw->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->last_read_us = c->start_us = clock_mono_us();
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    peer_name(c);
    if (gw->n_conns >= gw->cfg.max_connections + PROBE_RESERVE) {
        /* answered before its request is read, then closed: a client that waits for its
         * answer sees why, and the gateway's file descriptors stay bounded */
        over_capacity(c);
        return;
    }
    if (gw->n_conns < gw->cfg.max_connections && same_client(gw, c->peer) >= gw->cfg.max_connections_per_client) {
        gw->conns_rejected_per_client++;
        c->busy = 1;
        c->keep_alive = 0;
        c->route = API_ROUTES;
        char msg[160];
        snprintf(msg, sizeof msg, "too many connections from %s: the limit is --max-connections-per-client %d",
                 c->peer, gw->cfg.max_connections_per_client);
        api_respond_error(gw, c, 429, LION_EUNAVAILABLE, msg);
        return;
    }
    c->probe_only = gw->n_conns >= gw->cfg.max_connections;
    c->next = gw->conns;
    if (gw->conns) gw->conns->prev = c;
    gw->conns = c;
    gw->n_conns++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int http_server_start(gateway *gw, lion_status *st) {
    http_parser_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    struct sockaddr_in addr;
    if (uv_ip4_addr(gw->cfg.listen_host, gw->cfg.listen_port, &addr) != 0)
        return lion_fail(st, LION_EINVAL, "--listen: '%s' is not an IPv4 address", gw->cfg.listen_host);
    uv_tcp_init(gw->loop, &gw->listener);
    gw->listener.data = gw;
    gw->listening = 1;
    int rc = uv_tcp_bind(&gw->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&gw->listener, 128, on_connection);
    if (rc != 0)
        return lion_fail(st, LION_EIO, "HTTP %s:%d: cannot listen: %s", gw->cfg.listen_host, gw->cfg.listen_port,
                         uv_strerror(rc));
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&gw->listener, (struct sockaddr *)&bound, &len);
    log_info("HTTP on http://%s:%d", gw->cfg.listen_host, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    return 0;
}


static void request_timed_out(http_conn *c) {
    c->busy = 1;
    c->keep_alive = 0;
    c->start_us = clock_mono_us();
    c->route = API_ROUTES;
    if (c->probe_only) {
        over_capacity(c);
        return;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "the request did not arrive within --read-timeout-ms %d", c->gw->cfg.read_timeout_ms);
    api_respond_error(c->gw, c, 408, LION_ETIMEOUT, msg);
}

void http_server_sweep_idle(gateway *gw, int64_t now_us) {
    int64_t limit = (int64_t)gw->cfg.idle_timeout_ms * 1000;
    http_conn *next;
    for (http_conn *c = gw->conns; c; c = next) {
        next = c->next;
        /* a connection waiting for its answer is the request's deadline's business */
        if (c->lingering ? now_us > c->linger_until_us : !c->busy && now_us - c->last_read_us > limit) {
            conn_close(c);
            continue;
        }
        /* a request whose headers and body trickle in: a slow sender is not held for long */
        const int64_t read_limit = (int64_t)(c->probe_only ? PROBE_READ_MS : gw->cfg.read_timeout_ms) * 1000;
        const int64_t began = c->message_begin_us ? c->message_begin_us : c->probe_only ? c->start_us : 0;
        if (!c->busy && !c->lingering && began && now_us - began > read_limit) request_timed_out(c);
    }
}

void http_server_close(gateway *gw) {
    if (gw->listening) uv_close((uv_handle_t *)&gw->listener, NULL);
    gw->listening = 0;
    /* answers already queued (the 503s of the requests in flight) go out before the close */
    while (gw->conns) {
        http_conn *c = gw->conns;
        conn_detach_all(c);
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
            uv_close((uv_handle_t *)&c->tcp, on_close);
    }
}
