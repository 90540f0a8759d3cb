/* worker_gateways.h - the gateways one worker serves, and how its capacity is shared among
 * them.
 *
 * --gateway (LION_GATEWAY) names one endpoint, or several separated by commas: the worker
 * connects to every one of them, so that two gateways can share one set of workers. The
 * gateway's public key (--curve-server-key) is then one file for all of them (gateways that
 * share a key pair) or one file per gateway, in --gateway's order. Nothing here touches a
 * socket: worker_config.c checks the list while parsing (before the model loads),
 * worker_check.c the key files, worker.c connects one DEALER per endpoint.
 *
 * Credit: the worker holds at most --capacity jobs whoever sent them, so each gateway is
 * announced a share of it (worker_gateways_credit) rather than the whole; the worker's own
 * over-capacity refusal stays the safety net for the moments the shares overlap. */
#ifndef LION_WORKER_GATEWAYS_H
#define LION_WORKER_GATEWAYS_H

#include "status.h"
#include "worker.h"

/* More gateways than this in one list is a mistake, not a deployment. */
#define WORKER_MAX_GATEWAYS 16

typedef struct worker_gateways {
    int n;
    const char *endpoint[WORKER_MAX_GATEWAYS];   /* tcp://HOST:PORT, ipc://PATH */
    const char *server_key[WORKER_MAX_GATEWAYS]; /* the gateway's public key file; NULL: no CURVE */
    char *endpoints_copy, *keys_copy;            /* owned: the lists cut at their commas */
} worker_gateways;

/* Checks a --gateway value (option names where it came from, for messages): 1 to
 * WORKER_MAX_GATEWAYS endpoints separated by commas (blanks around them allowed), each a
 * ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH), none empty, none twice. */
int worker_gateways_check(const char *option, const char *list, lion_status *st);

/* cfg's gateways with the public key file of each: --curve-server-key holds one file (for
 * every gateway) or exactly one per gateway. Free with worker_gateways_free, also after a
 * failure. */
int worker_gateways_parse(worker_gateways *gws, const worker_config *cfg, lion_status *st);
void worker_gateways_free(worker_gateways *gws);

/* The capacity announced to gateway i of n (READY, HEARTBEAT):
 *   - the worker's capacity split evenly over the gateways that are up (up[k] non-zero:
 *     heard from lately and not said BYE), gateway i counted as up (a gateway that comes
 *     back is told what it will get); when it does not divide, the first ones get one more;
 *   - but no more than what the other gateways' jobs leave free (held[k]: the jobs of
 *     gateway k the worker holds), so that a gateway that comes back does not get jobs the
 *     worker would refuse while another still holds more than its new share;
 *   - and at least 1, so that every gateway keeps the worker (with more gateways than
 *     capacity the shares sum to more than it, and the refusal decides).
 * So a gateway that goes away leaves its share to the others (within a heartbeat of the
 * worker noticing: the gateway reads the capacity of every HEARTBEAT), and one gateway is
 * given the whole capacity, as before. */
int worker_gateways_credit(int capacity, int n, const int *up, const int *held, int i);

#endif
