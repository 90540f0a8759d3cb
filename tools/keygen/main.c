/* lion-keygen: a CURVE key pair for one side of the ZeroMQ links.
 *
 *   lion-keygen NAME      writes NAME.key (public + secret, mode 0600) and NAME.pub (0644)
 *
 * The gateway holds one pair (--curve-key gateway.key) and gives its gateway.pub to every
 * worker and tap reader; each worker and reader has its own pair, and its .pub goes into the
 * gateway's allow-list (--worker-keys, --tap-keys: a file of keys or a folder of .pub files).
 * docs/operations.md ("Security") shows a whole set-up. */
#include <stdio.h>

#include "args.h"
#include "curve.h"

int main(int argc, char **argv) {
    args_parsed parsed;
    lion_status st;
    if (args_parse(NULL, 0, 1, argc, argv, &parsed, &st) != 0 || (!parsed.help && parsed.n_positional != 1)) {
        fprintf(stderr, "lion-keygen: %s\nusage: lion-keygen NAME  (writes NAME.key and NAME.pub)\n",
                parsed.n_positional != 1 ? "give one NAME" : st.msg);
        return 2;
    }
    if (parsed.help) {
        printf("usage: lion-keygen NAME\n  writes NAME.key (CURVE key pair, mode 0600) and NAME.pub (its public key)\n");
        return 0;
    }
    char key[4096], pub[4096];
    snprintf(key, sizeof key, "%s.key", parsed.positional[0]);
    snprintf(pub, sizeof pub, "%s.pub", parsed.positional[0]);
    curve_keypair pair;
    if (curve_keypair_generate(key, pub, &pair, &st) != 0) {
        fprintf(stderr, "lion-keygen: %s\n", st.msg);
        return 1;
    }
    printf("%s\n", pair.public_key);
    return 0;
}
