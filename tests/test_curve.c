/* test_curve: CURVE key files and allow-lists (common/wire/curve.h): a generated pair loads
 * back, a readable secret is refused, allow-lists read from a file (comments, "public:"
 * lines, keys holding '#') and from a folder of .pub files, and bad keys are named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "testing.h"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

int main(void) {
    char dir[] = "/tmp/lion-test-curve-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char key[256], pub[256], list[256], folder[256], path[512];
    snprintf(key, sizeof key, "%s/a.key", dir);
    snprintf(pub, sizeof pub, "%s/a.pub", dir);
    lion_status st;
    curve_keypair made, loaded;
    CHECK(curve_keypair_generate(key, pub, &made, &st) == 0);
    struct stat sb;
    CHECK(stat(key, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK(curve_keypair_load(key, &loaded, &st) == 0);
    CHECK(!strcmp(made.public_key, loaded.public_key) && !strcmp(made.secret_key, loaded.secret_key));
    char p[CURVE_KEY_TEXT];
    CHECK(curve_public_load(pub, p, &st) == 0 && !strcmp(p, made.public_key));
    CHECK(curve_public_load(key, p, &st) == 0 && !strcmp(p, made.public_key)); /* the pair's public line */
    CHECK(curve_keypair_generate(key, pub, &made, &st) != 0);                  /* never overwrites a pair */
    chmod(key, 0644);
    CHECK(curve_keypair_load(key, &loaded, &st) != 0);
    CHECK_CONTAINS(st.msg, "others may read it");

    /* keys with '#' inside, a "public:" line, comments and blanks */
    unsigned char bin[32];
    memset(bin, 0xff, sizeof bin);
    char hashy[CURVE_KEY_TEXT];
    bin[3] = 0xfe;
    zmq_z85_encode(hashy, bin, 32); /* "%nSb#%nSc0...": a '#' inside the key */
    CHECK(strchr(hashy, '#') != NULL);
    char other[CURVE_KEY_TEXT], secret[CURVE_KEY_TEXT];
    zmq_curve_keypair(other, secret);
    snprintf(list, sizeof list, "%s/list.txt", dir);
    char text[1024];
    snprintf(text, sizeof text, "# workers of rack 1\n\n%s\npublic: %s\n#\n   %s  \n", made.public_key, other, hashy);
    write_text(list, text);
    curve_allowlist al;
    CHECK(curve_allowlist_load(&al, list, &st) == 0);
    CHECK_EQ_INT(al.n, 3);
    unsigned char want[32];
    zmq_z85_decode(want, made.public_key);
    CHECK(curve_allowlist_has(&al, want));
    zmq_z85_decode(want, other);
    CHECK(curve_allowlist_has(&al, want));
    CHECK(curve_allowlist_has(&al, bin));
    memset(want, 0, sizeof want);
    CHECK(!curve_allowlist_has(&al, want));
    curve_allowlist_free(&al);
    /* a bad key is named with its file and line */
    write_text(list, "# fine\nnot-a-key\n");
    CHECK(curve_allowlist_load(&al, list, &st) != 0);
    CHECK_CONTAINS(st.msg, "list.txt:2");
    CHECK_CONTAINS(st.msg, "not a public key");
    /* a folder of .pub files (others ignored) */
    snprintf(folder, sizeof folder, "%s/keys", dir);
    CHECK(mkdir(folder, 0700) == 0);
    snprintf(path, sizeof path, "%s/w1.pub", folder);
    write_text(path, made.public_key);
    snprintf(path, sizeof path, "%s/w2.pub", folder);
    write_text(path, other);
    snprintf(path, sizeof path, "%s/README", folder);
    write_text(path, "not a key\n");
    CHECK(curve_allowlist_load(&al, folder, &st) == 0);
    CHECK_EQ_INT(al.n, 2);
    curve_allowlist_free(&al);

    CHECK(curve_endpoint_is_local("tcp://127.0.0.1:5551") && curve_endpoint_is_local("ipc:///tmp/x"));
    CHECK(!curve_endpoint_is_local("tcp://0.0.0.0:5551") && !curve_endpoint_is_local("tcp://gateway:5551"));
    snprintf(text, sizeof text, "rm -rf %s", dir);
    CHECK(system(text) == 0);
    return testing_finish();
}
