/* curve.h - CURVE security on the ZeroMQ links (RFC 26 / CurveZMQ): key files, allow-lists
 * and socket setup, shared by the gateway (the server of every link), the workers and the
 * tap readers (clients).
 *
 * A key pair file (written by lion-keygen, mode 0600) holds two Z85 lines:
 *     public: <40 characters>
 *     secret: <40 characters>
 * A public key file holds the public line alone (or just the 40 characters). An allow-list
 * is a file of public keys, one per line ("# " starts a comment line: '#' alone is a Z85
 * digit, and a key may begin with it), or a folder of *.pub files. */
#ifndef LION_CURVE_H
#define LION_CURVE_H

#include <stddef.h>

#include "status.h"

#define CURVE_KEY_TEXT 41 /* 40 Z85 characters and a NUL */

typedef struct curve_keypair {
    char public_key[CURVE_KEY_TEXT];
    char secret_key[CURVE_KEY_TEXT];
} curve_keypair;

typedef struct curve_allowlist {
    unsigned char (*keys)[32]; /* binary public keys */
    int n;
} curve_allowlist;

/* Writes a new key pair to path (mode 0600) and its public key to pub_path (0644). */
int curve_keypair_generate(const char *path, const char *pub_path, curve_keypair *out, lion_status *st);
/* Reads a key pair file; refuses one that others may read (it holds a secret). */
int curve_keypair_load(const char *path, curve_keypair *out, lion_status *st);
/* Reads a public key (a .pub file, or the public line of a key pair file). */
int curve_public_load(const char *path, char public_key[CURVE_KEY_TEXT], lion_status *st);

int curve_allowlist_load(curve_allowlist *list, const char *path, lion_status *st);
void curve_allowlist_free(curve_allowlist *list);
int curve_allowlist_has(const curve_allowlist *list, const unsigned char key[32]);

/* The server side of a socket: its secret key, and the ZAP domain its clients are judged in. */
int curve_server_setup(void *sock, const curve_keypair *server, const char *zap_domain, lion_status *st);
/* The client side: the server's public key and the client's own pair. */
int curve_client_setup(void *sock, const char server_public[CURVE_KEY_TEXT], const curve_keypair *client,
                       lion_status *st);

/* Whether an endpoint stays on this machine (ipc://, inproc://, tcp:// on loopback): the only
 * places a link may run without CURVE unless the operator says --insecure. */
int curve_endpoint_is_local(const char *endpoint);

#endif
