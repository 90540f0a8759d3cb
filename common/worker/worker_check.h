/* worker_check.h - what a worker's configuration needs besides parsing, checked before the
 * model is loaded: the security of its link to the gateway and its ready file.
 *
 * worker_main runs these on every start, so that a key file that is missing or readable by
 * others is reported at once rather than after minutes of loading a large model, and
 * --check-config runs exactly the same checks (then opens and closes the stage, prints one
 * summary line and exits 0, binding and connecting nothing). Nothing here touches a socket. */
#ifndef LION_WORKER_CHECK_H
#define LION_WORKER_CHECK_H

#include <stddef.h>

#include "worker.h"

/* The links to every gateway of cfg->gateway as worker_run will set them up (worker.c runs
 * this same check before it connects):
 *   - the list: 1..WORKER_MAX_GATEWAYS endpoints, none twice (worker_gateways.h);
 *   - with --curve-server-key and --curve-key: both must be given, --curve-server-key one
 *     file for all the gateways or one per gateway, each public key must read, and this
 *     worker's key pair must read and be private to its owner (curve.h);
 *   - without either: gateways on this machine (ipc://, loopback tcp://) are fine; any on
 *     another machine is refused (naming it) unless --insecure.
 * On success, what (size bytes) says what the links will be, for the summary line:
 * "CURVE (gateway key KEY)" (or "gateway keys K1, K2"), "plain (local endpoint)" ("...s" for
 * several) or "INSECURE (--insecure: ...)".
 * Returns 0, or -1 with st naming the option, the endpoint or the file. */
int worker_check_link(const worker_config *cfg, char *what, size_t size, lion_status *st);

/* --ready-file: its folder must exist and be writable (the file is written once the stage is
 * open, and removed when the worker stops). Nothing to check without one. */
int worker_check_ready_file(const worker_config *cfg, lion_status *st);

/* The ready file: written with the replica id once the stage is open (so that an exec
 * readiness probe, `test -e FILE`, passes only then); removed at exit, and at start, since a
 * file left by a killed process (a container restarted in the same pod keeps its emptyDir)
 * would say ready before the model is loaded. Both do nothing without --ready-file. */
int worker_ready_file_write(const worker_config *cfg, lion_status *st);
void worker_ready_file_remove(const worker_config *cfg);

#endif
