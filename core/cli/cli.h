/*
 * The smx command: one file per subcommand, registered in the table in
 * core/cli/main.c.  Each subcommand parses its own options and returns
 * the process exit status.
 */
#ifndef SMX_CLI_H
#define SMX_CLI_H

#include <stdint.h>
#include <stdio.h>

struct cli_cmd {
	const char	*name;
	int		(*main)(int argc, char **argv);
	void		(*usage)(FILE *);
	const char	*summary;
};

/* Exit statuses shared by subcommands. */
#define CLI_EXIT_OK		0
#define CLI_EXIT_ERROR		1	/* smx could not do what was asked */
#define CLI_EXIT_USAGE		2	/* bad command line */

int	cmd_boot(int, char **);
void	cmd_boot_usage(FILE *);
int	cmd_restore(int, char **);
void	cmd_restore_usage(FILE *);
int	cmd_bake(int, char **);
void	cmd_bake_usage(FILE *);
int	cmd_bench(int, char **);
void	cmd_bench_usage(FILE *);
/* smx snapshot (core/cli/snapshot.c) handles `export` and `import` and
 * hands every other form (smx snapshot NAME -o DIR [--diff BASE]) to
 * cmd_snapshot_vm() (core/cli/snapshot_vm.c), argv[0] "snapshot". */
int	cmd_snapshot(int, char **);
void	cmd_snapshot_usage(FILE *);
int	cmd_snapshot_vm(int, char **);
/* smx restore DIR --name N [-p [IP:]HPORT:GPORT]... (core/cli/
 * snapshot_vm.c): restore DIR as container N, held by a detached smx
 * process; prints N.  Exit status. */
int	cli_restore_container(const char *dir, const char *name, char **ports,
	    unsigned nports);
/* smx boot --snapshot-after MS --snapshot-dir DIR [--diff BASE]
 * (core/cli/restore.c): boot o's machine, snapshot it after MS ms into
 * DIR (a diff against BASE when not NULL), stop; exit status. */
struct smx_boot_opts;
int	cli_boot_snapshot(const struct smx_boot_opts *, uint64_t after_ms,
	    const char *dir, const char *diff_base);
int	cmd_doctor(int, char **);
void	cmd_doctor_usage(FILE *);
int	cmd_import(int, char **);
void	cmd_import_usage(FILE *);
int	cmd_load(int, char **);
void	cmd_load_usage(FILE *);
int	cmd_pull(int, char **);
void	cmd_pull_usage(FILE *);
int	cmd_login(int, char **);
void	cmd_login_usage(FILE *);
int	cmd_logout(int, char **);
void	cmd_logout_usage(FILE *);
int	cmd_images(int, char **);
void	cmd_images_usage(FILE *);
int	cmd_inspect(int, char **);
void	cmd_inspect_usage(FILE *);
int	cmd_rmi(int, char **);
void	cmd_rmi_usage(FILE *);
int	cmd_gc(int, char **);
void	cmd_gc_usage(FILE *);
int	cmd_mount(int, char **);
void	cmd_mount_usage(FILE *);
int	cmd_run(int, char **);
void	cmd_run_usage(FILE *);
int	cmd_exec(int, char **);
void	cmd_exec_usage(FILE *);
int	cmd_ps(int, char **);
void	cmd_ps_usage(FILE *);
int	cmd_logs(int, char **);
void	cmd_logs_usage(FILE *);
int	cmd_stop(int, char **);
void	cmd_stop_usage(FILE *);
int	cmd_kill(int, char **);
void	cmd_kill_usage(FILE *);
int	cmd_rm(int, char **);
void	cmd_rm_usage(FILE *);
int	cmd_cp(int, char **);
void	cmd_cp_usage(FILE *);

/* The cached guest kernel's path (may not exist yet). */
const char *cli_kernel_path(void);

/* Parse a decimal number in [min, max]; 0 or -1. */
int	cli_number(const char *s, unsigned long long min,
	    unsigned long long max, unsigned long long *out);


/*
 * Images (core/cli/images.c): open the store, or print why not (NULL).
 * cli_image_resolve() parses s and finds its manifest digest: from the
 * ref, else from the digest it names when that blob is present.  Prints
 * the error as "smx: <cmd>: ..." and returns CLI_EXIT_USAGE for a bad
 * reference, CLI_EXIT_ERROR for an unknown image, else CLI_EXIT_OK.
 */
struct image_store;
struct image_ref;
struct image_store *cli_store_open(const char *cmd);
int	cli_image_resolve(struct image_store *, const char *cmd,
	    const char *s, struct image_ref *, char digest[72]);

/*
 * Progress (core/cli/progress.c).  TTY: a line per layer redrawn in
 * place (at most 10 times a second); JSON: one object per line, e.g.
 * {"event":"layer","status":"progress","digest":...,"done":N,"total":N};
 * QUIET: nothing.
 */
enum cli_progress_mode {
	CLI_PROGRESS_TTY,
	CLI_PROGRESS_JSON,
	CLI_PROGRESS_QUIET,
};
enum cli_layer_state {
	CLI_LAYER_WAITING,
	CLI_LAYER_DOWNLOADING,
	CLI_LAYER_DONE,
};
struct cli_progress;

struct cli_progress *cli_progress_new(FILE *, enum cli_progress_mode);
void	cli_progress_free(struct cli_progress *);
void	cli_progress_layer(struct cli_progress *, const char *digest,
	    enum cli_layer_state, uint64_t done, uint64_t total);
/* A JSON line {"event":event, key:value, key2:value2} (keys may be
 * NULL); on a TTY, a final redraw. */
void	cli_progress_event(struct cli_progress *, const char *event,
	    const char *key, const char *value, const char *key2,
	    const char *value2);
/* 1234567 -> "1.23MB" (docker's decimal units). */
void	cli_human_size(uint64_t, char *buf, size_t len);

#endif /* SMX_CLI_H */
