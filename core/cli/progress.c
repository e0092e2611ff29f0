/*
 * Progress output of long commands (smx pull): per-layer bars redrawn in
 * place on a terminal, or one JSON object per line for programs.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"

#define REDRAW_NS	100000000ull	/* at most 10 redraws a second */
#define BAR_WIDTH	30

struct row {
	char		digest[72];
	const char	*state;
	uint64_t	done, total;
	uint64_t	last_json;	/* now_ns() of its last JSON line */
};

struct cli_progress {
	FILE			*f;
	enum cli_progress_mode	 mode;
	struct row		*rows;
	size_t			 nrows;
	size_t			 drawn;		/* lines on screen */
	uint64_t		 last_draw;
};

struct cli_progress *
cli_progress_new(FILE *f, enum cli_progress_mode mode)
{
	struct cli_progress	*p;

	p = xcalloc(1, sizeof(*p));
	p->f = f;
	p->mode = mode;
	return p;
}

void
cli_progress_free(struct cli_progress *p)
{
	if (p == NULL)
		return;
	free(p->rows);
	free(p);
}

/* Decimal units with three significant digits, as docker prints them. */
void
cli_human_size(uint64_t n, char *buf, size_t len)
{
	static const char	*units[] = { "B", "kB", "MB", "GB", "TB" };
	double			 v = (double)n;
	size_t			 u = 0;

	while (v >= 1000 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1000;
		u++;
	}
	snprintf(buf, len, "%.3g%s", v, units[u]);
}

/* Print and free a JSON object as one line. */
static void
json_line(FILE *f, cJSON *o)
{
	char	*s;

	if ((s = cJSON_PrintUnformatted(o)) != NULL) {
		fprintf(f, "%s\n", s);
		fflush(f);
		free(s);
	}
	cJSON_Delete(o);
}

static struct row *
row_get(struct cli_progress *p, const char *digest)
{
	struct row	*r;
	size_t		 i;

	for (i = 0; i < p->nrows; i++)
		if (strcmp(p->rows[i].digest, digest) == 0)
			return &p->rows[i];
	p->rows = xreallocarray(p->rows, p->nrows + 1, sizeof(*p->rows));
	r = &p->rows[p->nrows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->digest, sizeof(r->digest), "%s", digest);
	return r;
}

/* Redraw every row over the ones drawn before (cursor up, clear line). */
static void
redraw(struct cli_progress *p)
{
	struct row	*r;
	char		 bar[BAR_WIDTH + 1], a[16], b[16];
	const char	*hex;
	size_t		 i, fill;

	if (p->drawn > 0)
		fprintf(p->f, "\033[%zuA", p->drawn);
	for (i = 0; i < p->nrows; i++) {
		r = &p->rows[i];
		hex = strchr(r->digest, ':') ? strchr(r->digest, ':') + 1 :
		    r->digest;
		fprintf(p->f, "\r\033[K%.12s: %-12s", hex, r->state);
		if (strcmp(r->state, "Downloading") == 0 && r->total > 0) {
			fill = r->done >= r->total ? BAR_WIDTH :
			    (size_t)(r->done * BAR_WIDTH / r->total);
			memset(bar, '=', fill);
			memset(bar + fill, ' ', BAR_WIDTH - fill);
			if (fill > 0 && fill < BAR_WIDTH)
				bar[fill - 1] = '>';
			bar[BAR_WIDTH] = '\0';
			cli_human_size(r->done, a, sizeof(a));
			cli_human_size(r->total, b, sizeof(b));
			fprintf(p->f, " [%s] %s/%s", bar, a, b);
		}
		fputc('\n', p->f);
	}
	p->drawn = p->nrows;
	p->last_draw = now_ns();
	fflush(p->f);
}

void
cli_progress_layer(struct cli_progress *p, const char *digest,
    enum cli_layer_state state, uint64_t done, uint64_t total)
{
	static const char	*names[] = { "Waiting", "Downloading",
				    "Pull complete" };
	static const char	*json_names[] = { "start", "progress", "done" };
	struct row		*r;
	cJSON			*o;
	uint64_t		 now = now_ns();
	bool			 changed;

	if (p->mode == CLI_PROGRESS_QUIET)
		return;
	r = row_get(p, digest);
	changed = r->state != names[state];
	r->state = names[state];
	r->done = done;
	r->total = total;
	if (p->mode == CLI_PROGRESS_TTY) {
		if (changed || now - p->last_draw >= REDRAW_NS)
			redraw(p);
		return;
	}
	/* JSON: every change of state, progress at most 10 times a second
	 * per layer. */
	if (!changed && now - r->last_json < REDRAW_NS)
		return;
	r->last_json = now;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "event", "layer");
	cJSON_AddStringToObject(o, "status", json_names[state]);
	cJSON_AddStringToObject(o, "digest", digest);
	cJSON_AddNumberToObject(o, "done", (double)done);
	cJSON_AddNumberToObject(o, "total", (double)total);
	json_line(p->f, o);
}

void
cli_progress_event(struct cli_progress *p, const char *event,
    const char *key, const char *value, const char *key2,
    const char *value2)
{
	cJSON	*o;

	if (p->mode == CLI_PROGRESS_TTY) {
		redraw(p);
		return;
	}
	if (p->mode != CLI_PROGRESS_JSON)
		return;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "event", event);
	if (key != NULL && value != NULL)
		cJSON_AddStringToObject(o, key, value);
	if (key2 != NULL && value2 != NULL)
		cJSON_AddStringToObject(o, key2, value2);
	json_line(p->f, o);
}
