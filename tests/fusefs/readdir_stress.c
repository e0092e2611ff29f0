/*
 * readdir_stress DIR [N]: create N (default 10000) files in DIR, then
 * list DIR while another thread unlinks every odd-numbered file.  POSIX
 * allows a concurrently unlinked name to be seen or not; it forbids
 * duplicates and losing names nobody touched.  Then a second listing
 * must show exactly the even files.  Exit 0 when all holds.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int	dfd, nfiles;

static void *
unlinker(void *arg)
{
	char	name[32];
	int	i;

	for (i = 1; i < nfiles; i += 2) {
		snprintf(name, sizeof(name), "f%05d", i);
		if (unlinkat(dfd, name, 0) < 0) {
			fprintf(stderr, "unlink %s: %s\n", name,
			    strerror(errno));
			exit(1);
		}
	}
	return NULL;
}

/* List DIR; count each name's sightings.  Returns the failures. */
static int
list(const char *path, unsigned char *seen, int *unknown)
{
	DIR		*d;
	struct dirent	*e;
	char		*end;
	long		 i;

	memset(seen, 0, nfiles);
	*unknown = 0;
	if ((d = opendir(path)) == NULL) {
		perror(path);
		return 1;
	}
	errno = 0;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		i = e->d_name[0] == 'f' ? strtol(e->d_name + 1, &end, 10) : -1;
		if (i < 0 || i >= nfiles || *end != '\0')
			(*unknown)++;
		else if (seen[i] < 255)
			seen[i]++;
	}
	if (errno != 0) {
		perror("readdir");
		closedir(d);
		return 1;
	}
	closedir(d);
	return 0;
}

int
main(int argc, char **argv)
{
	unsigned char	*seen;
	pthread_t	 t;
	char		 name[32];
	int		 i, fd, unknown, dups = 0, lost = 0, bad = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: readdir_stress DIR [N]\n");
		return 2;
	}
	nfiles = argc > 2 ? atoi(argv[2]) : 10000;
	if ((dfd = open(argv[1], O_RDONLY | O_DIRECTORY)) < 0) {
		perror(argv[1]);
		return 1;
	}
	seen = calloc(nfiles, 1);
	for (i = 0; i < nfiles; i++) {
		snprintf(name, sizeof(name), "f%05d", i);
		if ((fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL,
		    0644)) < 0) {
			fprintf(stderr, "create %s: %s\n", name,
			    strerror(errno));
			return 1;
		}
		close(fd);
	}
	if (list(argv[1], seen, &unknown) != 0)
		return 1;
	for (i = 0; i < nfiles; i++)
		if (seen[i] != 1) {
			fprintf(stderr, "before: f%05d seen %d times\n", i,
			    seen[i]);
			bad++;
		}
	pthread_create(&t, NULL, unlinker, NULL);
	if (list(argv[1], seen, &unknown) != 0)
		return 1;
	pthread_join(t, NULL);
	for (i = 0; i < nfiles; i++) {
		if (seen[i] > 1)
			dups++;
		if (seen[i] == 0 && i % 2 == 0)
			lost++;
	}
	printf("during unlink: %d duplicates, %d untouched names lost, "
	    "%d unknown\n", dups, lost, unknown);
	if (list(argv[1], seen, &unknown) != 0)
		return 1;
	for (i = 0; i < nfiles; i++)
		if (seen[i] != (i % 2 == 0)) {
			if (bad++ < 5)
				fprintf(stderr, "after: f%05d seen %d times\n",
				    i, seen[i]);
		}
	printf("after: %d wrong, %d unknown\n", bad, unknown);
	return dups || lost || bad || unknown ? 1 : 0;
}
