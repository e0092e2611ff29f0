/*
 * The smx command: one file per subcommand, registered in the table in
 * core/cli/main.c.  Each subcommand parses its own options and returns
 * the process exit status.
 */
#ifndef SMX_CLI_H
#define SMX_CLI_H

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
int	cmd_doctor(int, char **);
void	cmd_doctor_usage(FILE *);

/* The cached guest kernel's path (may not exist yet). */
const char *cli_kernel_path(void);

/* Parse a decimal number in [min, max]; 0 or -1. */
int	cli_number(const char *s, unsigned long long min,
	    unsigned long long max, unsigned long long *out);

#endif /* SMX_CLI_H */
