/*
 * image/initramfs.c: the archive is read back with libarchive (entries,
 * types, modes, the device number, /init's bytes) and checked against
 * what the kernel's unpacker needs (newc magic); the cache is keyed by
 * the agent's content.
 */
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "tests/tap.h"

static char	home[] = "/tmp/initramfs_test.XXXXXX";

/* A fake agent with the given content. */
static void
make_agent(const char *path, const char *content)
{
	FILE	*f;

	if ((f = fopen(path, "w")) == NULL)
		fatal("%s", path);
	fputs(content, f);
	fclose(f);
}

struct seen {
	int	init, console, dirs;
	char	init_data[64];
};

/* List the archive; 0 when every entry was as expected. */
static int
list(const char *path, struct seen *s)
{
	struct archive		*a;
	struct archive_entry	*e;
	const char		*name;
	la_ssize_t		 n;
	int			 rc = 0;

	memset(s, 0, sizeof *s);
	a = archive_read_new();
	archive_read_support_format_cpio(a);
	archive_read_support_filter_none(a);
	if (archive_read_open_filename(a, path, 4096) != ARCHIVE_OK) {
		tap_diag("open %s: %s", path, archive_error_string(a));
		archive_read_free(a);
		return -1;
	}
	if (archive_format(a) != 0 &&
	    archive_format(a) != ARCHIVE_FORMAT_CPIO_SVR4_NOCRC)
		rc = -1;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		if (archive_format(a) != ARCHIVE_FORMAT_CPIO_SVR4_NOCRC) {
			tap_diag("format %s, not newc",
			    archive_format_name(a));
			rc = -1;
		}
		name = archive_entry_pathname(e);
		if (archive_entry_uid(e) != 0 || archive_entry_gid(e) != 0)
			rc = -1;
		if (strcmp(name, "init") == 0) {
			s->init++;
			if (archive_entry_filetype(e) != AE_IFREG ||
			    archive_entry_perm(e) != 0755)
				rc = -1;
			n = archive_read_data(a, s->init_data,
			    sizeof s->init_data - 1);
			if (n < 0)
				rc = -1;
		} else if (strcmp(name, "dev/console") == 0) {
			s->console++;
			if (archive_entry_filetype(e) != AE_IFCHR ||
			    major(archive_entry_rdev(e)) != 5 ||
			    minor(archive_entry_rdev(e)) != 1)
				rc = -1;
		} else if (archive_entry_filetype(e) == AE_IFDIR) {
			if (strcmp(name, "dev") == 0 ||
			    strcmp(name, "proc") == 0 ||
			    strcmp(name, "sys") == 0 ||
			    strcmp(name, "run") == 0 ||
			    strcmp(name, "tmp") == 0)
				s->dirs++;
		} else {
			tap_diag("unexpected entry %s", name);
			rc = -1;
		}
	}
	archive_read_free(a);
	return rc;
}

static int
t_contents(void)
{
	char		 agent[128], path[512], err[256], magic[7] = { 0 };
	struct seen	 s;
	int		 fd;

	snprintf(agent, sizeof agent, "%s/agent", home);
	make_agent(agent, "#!agent one\n");
	TAP_CHECK(image_initramfs_get(home, agent, path, sizeof path, err,
	    sizeof err) == 0);
	TAP_CHECK(strncmp(path, home, strlen(home)) == 0);
	TAP_CHECK(strstr(path, "/initramfs/") != NULL);
	TAP_CHECK(list(path, &s) == 0);
	TAP_CHECK(s.init == 1 && s.console == 1 && s.dirs == 5);
	TAP_CHECK(strcmp(s.init_data, "#!agent one\n") == 0);
	/* The kernel's unpacker wants "070701" (newc, no CRC). */
	TAP_CHECK((fd = open(path, O_RDONLY)) >= 0);
	TAP_CHECK(read(fd, magic, 6) == 6);
	close(fd);
	TAP_CHECK(strcmp(magic, "070701") == 0);
	return TAP_PASS;
}

static int
t_cache(void)
{
	char		 agent[128], p1[512], p2[512], p3[512], err[256];
	struct stat	 st1, st2;
	struct seen	 s;

	snprintf(agent, sizeof agent, "%s/agent2", home);
	make_agent(agent, "#!agent two\n");
	TAP_CHECK(image_initramfs_get(home, agent, p1, sizeof p1, err,
	    sizeof err) == 0);
	TAP_CHECK(stat(p1, &st1) == 0);
	/* Same content: the same file, not rewritten. */
	TAP_CHECK(image_initramfs_get(home, agent, p2, sizeof p2, err,
	    sizeof err) == 0);
	TAP_CHECK(strcmp(p1, p2) == 0);
	TAP_CHECK(stat(p2, &st2) == 0);
	TAP_CHECK(st1.st_ino == st2.st_ino);
	/* New content: another file holding the new agent. */
	make_agent(agent, "#!agent three\n");
	TAP_CHECK(image_initramfs_get(home, agent, p3, sizeof p3, err,
	    sizeof err) == 0);
	TAP_CHECK(strcmp(p1, p3) != 0);
	TAP_CHECK(list(p3, &s) == 0);
	TAP_CHECK(strcmp(s.init_data, "#!agent three\n") == 0);
	return TAP_PASS;
}

static int
t_missing_agent(void)
{
	char	agent[128], path[512], err[256] = "";

	snprintf(agent, sizeof agent, "%s/no-such-agent", home);
	TAP_CHECK(image_initramfs_get(home, agent, path, sizeof path, err,
	    sizeof err) == -ENOENT);
	TAP_CHECK(strstr(err, "no-such-agent") != NULL);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "newc archive with /init, /dev/console and mount points",
	    t_contents },
	{ "cached by the agent's content", t_cache },
	{ "a missing agent is named in the error", t_missing_agent },
};

int
main(void)
{
	int	rc;

	if (mkdtemp(home) == NULL)
		fatal("mkdtemp");
	rc = tap_run(cases, ARRAY_SIZE(cases), 60);
	rm_tree_at(AT_FDCWD, home, NULL);
	return rc;
}
