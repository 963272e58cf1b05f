/* fbclock: TrueTime from fbclockd's shared memory (layout: fbclock/PROTOCOL.md).
 * Link with -lfbclock (target/release/libfbclock.so or .a). */
#ifndef TIMECARD_FBCLOCK_H
#define TIMECARD_FBCLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FBCLOCK_OK 0
#define FBCLOCK_E_MAP (-1)
#define FBCLOCK_E_BAD_FILE (-2)
#define FBCLOCK_E_NO_DATA (-5)
#define FBCLOCK_E_WOU_TOO_BIG (-6)
#define FBCLOCK_E_SEQLOCK (-8)
#define FBCLOCK_E_STALE (-9)
#define FBCLOCK_E_INVALID (-22)

/* An interval that contains true time, ns since the epoch of its time scale. */
struct fbclock_truetime {
    int64_t earliest_ns;
    int64_t latest_ns;
};

typedef struct FbClock fbclock_t;

/* Opens the shared file (NULL: /run/timecard/fbclock). NULL on error, code in *err. */
fbclock_t *fbclock_open(const char *path, int *err);
void fbclock_close(fbclock_t *clock);
/* TAI now. */
int fbclock_gettime(const fbclock_t *clock, struct fbclock_truetime *out);
/* UTC now (leap-second aware). */
int fbclock_gettime_utc(const fbclock_t *clock, struct fbclock_truetime *out);
/* Returns once earliest > ts_ns (TAI); out may be NULL. */
int fbclock_commit_wait(const fbclock_t *clock, int64_t ts_ns, struct fbclock_truetime *out);
const char *fbclock_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
