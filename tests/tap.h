/*
 * A minimal TAP runner for the C test programs: each program has a table
 * of {name, function} cases; a case returns TAP_PASS, TAP_FAIL or
 * TAP_SKIP.  An alarm() guard turns a hang into a failure.  The program
 * exits 0 when nothing failed, 1 otherwise, and 77 when every case
 * skipped (automake's SKIP).
 */
#ifndef SMX_TAP_H
#define SMX_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAP_PASS	0
#define TAP_FAIL	1
#define TAP_SKIP	77

struct tap_case {
	const char	*name;
	int		(*fn)(void);
};

/* Say why a case failed or skipped; printed as a TAP diagnostic. */
static inline void __attribute__((format(printf, 1, 2)))
tap_diag(const char *fmt, ...)
{
	va_list	ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* Fail the current case with a diagnostic naming the source line. */
#define TAP_CHECK(cond) do {						\
	if (!(cond)) {							\
		tap_diag("%s:%d: check failed: %s", __FILE__, __LINE__,	\
		    #cond);						\
		return TAP_FAIL;					\
	}								\
} while (0)

/* The same, for cases that clean up: jump to `label` instead. */
#define TAP_CHECK_GOTO(cond, label) do {				\
	if (!(cond)) {							\
		tap_diag("%s:%d: check failed: %s", __FILE__, __LINE__,	\
		    #cond);						\
		goto label;						\
	}								\
} while (0)

static inline int
tap_run(const struct tap_case *cases, size_t n, unsigned timeout_s)
{
	size_t	i, failed = 0, skipped = 0;
	int	rc;

	alarm(timeout_s);
	printf("1..%zu\n", n);
	fflush(stdout);
	for (i = 0; i < n; i++) {
		rc = cases[i].fn();
		if (rc == TAP_SKIP) {
			printf("ok %zu - %s # SKIP\n", i + 1, cases[i].name);
			skipped++;
		} else if (rc == TAP_PASS)
			printf("ok %zu - %s\n", i + 1, cases[i].name);
		else {
			printf("not ok %zu - %s\n", i + 1, cases[i].name);
			failed++;
		}
		fflush(stdout);
	}
	if (failed)
		return 1;
	return skipped == n ? 77 : 0;
}

#endif /* SMX_TAP_H */
