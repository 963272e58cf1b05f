/* Reads TrueTime from fbclockd's shared memory with the C ABI.
 * Build: cc example.c -I../../include -L<target>/release -lfbclock -o example */
#include <stdio.h>
#include <stdlib.h>
#include "fbclock.h"

int main(int argc, char **argv) {
    int err = 0;
    fbclock_t *clock = fbclock_open(argc > 1 ? argv[1] : NULL, &err);
    if (!clock) {
        fprintf(stderr, "fbclock_open: %s\n", fbclock_strerror(err));
        return 2;
    }
    struct fbclock_truetime tt;
    int rc = fbclock_gettime(clock, &tt);
    if (rc != FBCLOCK_OK) {
        fprintf(stderr, "fbclock_gettime: %s\n", fbclock_strerror(rc));
        fbclock_close(clock);
        return 1;
    }
    printf("earliest %lld latest %lld wou %lld\n", (long long)tt.earliest_ns, (long long)tt.latest_ns,
           (long long)(tt.latest_ns - tt.earliest_ns));
    rc = fbclock_commit_wait(clock, tt.latest_ns, &tt);
    printf("commit_wait %s earliest %lld\n", fbclock_strerror(rc), (long long)tt.earliest_ns);
    fbclock_close(clock);
    return rc == FBCLOCK_OK ? 0 : 1;
}
