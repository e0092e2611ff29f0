/*
 * smx pull: download an image into the store through the registry
 * client, on a reactor of its own, with progress on stdout.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"
#include "reactor/reactor.h"

#define MAX_INSECURE	16

void
cmd_pull_usage(FILE *f)
{
	fprintf(f, "usage: smx pull [--quiet | --json] [--platform OS/ARCH] "
	    "[--insecure-registry HOST]... REF\n\n"
	    "Download REF (\"alpine\", \"user/app:1\", \"host:5000/x@sha256:...\")"
	    " into $SMX_HOME.\n"
	    "On a terminal each layer gets a progress bar; otherwise (or with\n"
	    "--json) each event is one JSON object per line.  --quiet prints\n"
	    "only the manifest digest.  --insecure-registry allows plain HTTP\n"
	    "to HOST (repeatable).  Exits 1 when the pull fails, 2 on a bad\n"
	    "command line or reference.\n");
}

struct pull_state {
	struct reactor		*reactor;
	struct image_pull	*pull;
	struct cli_progress	*prog;
	char			 digest[72];
	int			 error;
	char			*message;
	bool			 ended;
	bool			 fetched;	/* some layer was downloaded */
};

static void
pull_cb(const struct image_pull_event *ev, void *arg)
{
	struct pull_state	*st = arg;

	switch (ev->kind) {
	case IMAGE_PULL_RESOLVED:
		snprintf(st->digest, sizeof(st->digest), "%s", ev->digest);
		cli_progress_event(st->prog, "resolved", "digest", ev->digest,
		    NULL, NULL);
		break;
	case IMAGE_PULL_LAYER_START:
		cli_progress_layer(st->prog, ev->digest, CLI_LAYER_WAITING,
		    ev->done, ev->total);
		break;
	case IMAGE_PULL_LAYER_PROGRESS:
		st->fetched = true;
		cli_progress_layer(st->prog, ev->digest,
		    CLI_LAYER_DOWNLOADING, ev->done, ev->total);
		break;
	case IMAGE_PULL_LAYER_DONE:
		cli_progress_layer(st->prog, ev->digest, CLI_LAYER_DONE,
		    ev->done, ev->total);
		break;
	case IMAGE_PULL_DONE:
	case IMAGE_PULL_FAILED:
		st->ended = true;
		st->error = ev->kind == IMAGE_PULL_DONE ? 0 :
		    (ev->error != 0 ? ev->error : -EIO);
		if (ev->digest != NULL)
			snprintf(st->digest, sizeof(st->digest), "%s",
			    ev->digest);
		if (ev->message != NULL)
			st->message = xstrdup(ev->message);
		reactor_stop(st->reactor);
		break;
	}
}

/* ^C: cancel the pull; its FAILED event ends the loop. */
static void
sigint_cb(int signo, void *arg)
{
	struct pull_state	*st = arg;
	struct image_pull	*p = st->pull;

	(void)signo;
	if (p != NULL && !st->ended) {
		st->pull = NULL;
		image_pull_free(p);
	}
}

int
cmd_pull(int argc, char **argv)
{
	static const struct option	longopts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "json", no_argument, NULL, 'j' },
		{ "platform", required_argument, NULL, 'p' },
		{ "insecure-registry", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct pull_state	 st = { 0 };
	struct image_pull_opts	 o;
	struct image_store	*s;
	struct image_ref	 ref;
	struct reactor_signal	*sig;
	enum cli_progress_mode	 mode;
	const char		*insecure[MAX_INSECURE + 1] = { NULL };
	const char		*platform = NULL;
	char			 err[256], name[IMAGE_REF_MAX];
	int			 ch, ninsecure = 0, rc = CLI_EXIT_ERROR;
	bool			 quiet = false, json = false;

	while ((ch = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
		switch (ch) {
		case 'q':
			quiet = true;
			break;
		case 'j':
			json = true;
			break;
		case 'p':
			platform = optarg;
			break;
		case 'i':
			if (ninsecure == MAX_INSECURE) {
				fprintf(stderr, "smx: pull: at most %d "
				    "--insecure-registry\n", MAX_INSECURE);
				return CLI_EXIT_USAGE;
			}
			insecure[ninsecure++] = optarg;
			break;
		case 'h':
			cmd_pull_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_pull_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc || (quiet && json)) {
		cmd_pull_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (image_ref_parse(argv[optind], &ref, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx: pull: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	image_ref_familiar(&ref, name, sizeof(name));
	mode = quiet ? CLI_PROGRESS_QUIET : json || !isatty(STDOUT_FILENO) ?
	    CLI_PROGRESS_JSON : CLI_PROGRESS_TTY;
	if ((s = cli_store_open("pull")) == NULL)
		return CLI_EXIT_ERROR;
	if ((st.reactor = reactor_create()) == NULL) {
		fprintf(stderr, "smx: pull: cannot create the event loop\n");
		goto out_store;
	}
	st.prog = cli_progress_new(stdout, mode);
	image_pull_opts_init(&o);
	if (platform != NULL)
		o.platform = platform;
	o.insecure = ninsecure > 0 ? insecure : NULL;
	if (mode == CLI_PROGRESS_TTY)
		printf("Pulling %s\n", name);
	if ((st.pull = image_pull_start(st.reactor, s, &ref, &o, pull_cb,
	    &st)) == NULL) {
		fprintf(stderr, "smx: pull: cannot start pulling %s: %s\n",
		    name, errno == EINVAL ? "bad --platform (want os/arch"
		    "[/variant])" : strerror(errno));
		rc = errno == EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
		goto out_reactor;
	}
	sig = reactor_add_signal(st.reactor, SIGINT, sigint_cb, &st);
	while (!st.ended)
		if (reactor_run(st.reactor) != 0)
			break;
	if (sig != NULL)
		reactor_del_signal(sig);
	image_pull_free(st.pull);
	if (!st.ended || st.error != 0) {
		cli_progress_event(st.prog, "error", "ref", name, "message",
		    st.message != NULL ? st.message : "the pull stopped");
		/* The registry's messages mostly name the image already. */
		if (st.message != NULL && strncmp(st.message, name,
		    strlen(name)) == 0)
			fprintf(stderr, "smx: pull: %s\n", st.message);
		else
			fprintf(stderr, "smx: pull: %s: %s\n", name,
			    st.message != NULL ? st.message :
			    "the pull stopped");
		goto out_reactor;
	}
	cli_progress_event(st.prog, "done", "ref", name, "digest", st.digest);
	if (mode == CLI_PROGRESS_TTY) {
		printf("Digest: %s\nStatus: %s %s\n", st.digest,
		    st.fetched ? "Downloaded newer image for" :
		    "Image is up to date for", name);
	} else if (mode == CLI_PROGRESS_QUIET)
		printf("%s\n", st.digest);
	rc = CLI_EXIT_OK;
out_reactor:
	cli_progress_free(st.prog);
	free(st.message);
	reactor_free(st.reactor);
out_store:
	image_store_close(s);
	return rc;
}
