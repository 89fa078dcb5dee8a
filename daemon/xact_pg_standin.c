/*
 * STAND-INS for helper rec's side of the S6 contract (xact.h, "PostgreSQL
 * parts"), so that the session's PostgreSQL participants build and run
 * before rec's branch is merged. They decide nothing durably: a kill -9
 * between PREPARE and COMMIT PREPARED leaves the prepared transactions to
 * an operator. This whole file goes when `rec` is merged.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "daemon/log.h"
#include "daemon/xact.h"

const char *xact_daemon_id(const struct xact *x)
{
    (void)x;
    return "00000000000000aa";
}

uint64_t xact_txid_new(struct xact *x)
{
    static atomic_uint_fast64_t next;
    uint64_t zero = 0;

    (void)x;
    atomic_compare_exchange_strong(&next, &zero, (uint64_t)time(NULL) * 1000);
    return atomic_fetch_add(&next, 1) + 1;
}

int xact_decide_pg(struct xact *x, uint64_t txid, const char *const *binds, size_t n)
{
    (void)x;
    (void)txid;
    (void)binds;
    (void)n;
    return 0;
}

void xact_resolved(struct xact *x, uint64_t txid)
{
    (void)x;
    (void)txid;
}

void xact_pg_in_doubt(struct xact *x, uint64_t txid, const char *bind, bool commit)
{
    (void)x;
    log_warn("transaction %llu: %s PREPARED on bind %s could not be done now (stand-in: left to the operator)",
             (unsigned long long)txid, commit ? "COMMIT" : "ROLLBACK", bind);
}
