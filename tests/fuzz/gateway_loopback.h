/* gateway_loopback.h - the gateway's real HTTP server, in this process, without workers.
 *
 * The gateway fuzz targets drive the code a client reaches: http_server_start's listener on
 * 127.0.0.1 (an ephemeral port), its connections (services/gateway/http_conn.c: http-parser
 * with the gateway's settings, limits, pipelining, 100-continue, lingering close) and the
 * routes (api.c: JSON, multipart/form-data, base64 and data-URI images). Nothing in the
 * gateway is changed or bypassed: the fuzz target is an ordinary TCP client, and the gateway's
 * libuv loop runs on the same thread in between its reads and writes, so a run is
 * deterministic. With no stage workers connected, a well-formed inference request ends at
 * admission (503 "no live vision worker"), after all of its parsing and checks.
 *
 * gateway_loopback_exchange sends bytes on a new connection, half-closes it and collects
 * everything the gateway answers until it closes the connection. A gateway that neither
 * answers nor closes within 10 s, or that still holds the connection afterwards, aborts the
 * run (a hang or a leaked connection is a finding too). */
#ifndef LION_GATEWAY_LOOPBACK_H
#define LION_GATEWAY_LOOPBACK_H

#include <stddef.h>
#include <stdint.h>

/* The API key the gateway asks for (--api-keys): requests send "Authorization: Bearer " it. */
#define GATEWAY_FUZZ_API_KEY "lion-fuzz-key-0123456789"

/* Starts the gateway (once per process; defaults of gateway_config_parse, listening on an
 * ephemeral loopback port). Aborts when it cannot. */
void gateway_loopback_start(void);

/* The gateway's answer bytes to one connection that sent data[0..len). *out is malloc'd and
 * NUL-terminated (free it); *out_len its length. */
void gateway_loopback_exchange(const uint8_t *data, size_t len, char **out, size_t *out_len);

/* Checks one HTTP/1.x response at the start of text: status line, headers, Content-Length
 * and, unless head_only, that exactly that many body bytes follow (when whole is set, the
 * response must be all of text). An application/json body must parse, and an error status
 * must carry {"error": {"code": string, "message": string}}. Returns the status, aborts on a
 * malformed response; *next (may be NULL) is set past it. */
int gateway_loopback_check_response(const char *text, size_t len, int head_only, int whole, size_t *next);

#endif
