/*
 * smx doctor: what this host offers smx, in `key: value` lines a person
 * can read and a script can grep.
 */
#include <sys/utsname.h>

#include <archive.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "config.h"
#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/smx.h"
#include "hv/hv.h"

void
cmd_doctor_usage(FILE *f)
{
	fprintf(f, "usage: smx doctor\n\n"
	    "Print host facts smx depends on, one `key: value` per line:\n"
	    "the kind of KVM (hardware, pvm or absent), library versions,\n"
	    "$SMX_HOME and the cached guest kernel.  Exits 1 when KVM is\n"
	    "absent.\n");
}

/* The CPU model from /proc/cpuinfo, or "unknown". */
static void
cpu_model(char *buf, size_t len)
{
	FILE	*f;
	char	 line[256], *p;

	snprintf(buf, len, "unknown");
	if ((f = fopen("/proc/cpuinfo", "r")) == NULL)
		return;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "model name", 10) != 0 ||
		    (p = strchr(line, ':')) == NULL)
			continue;
		p += strspn(p + 1, " \t") + 1;
		p[strcspn(p, "\n")] = '\0';
		snprintf(buf, len, "%s", p);
		break;
	}
	fclose(f);
}

int
cmd_doctor(int argc, char **argv)
{
	struct utsname	 u;
	enum hv_kind	 kind;
	const char	*why = NULL, *kernel;
	char		 cpu[128];
	int		 api;

	if (argc > 1) {
		if (strcmp(argv[1], "-h") == 0 ||
		    strcmp(argv[1], "--help") == 0) {
			cmd_doctor_usage(stdout);
			return CLI_EXIT_OK;
		}
		cmd_doctor_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	kind = hv_probe(&why);
	printf("smx: %s\n", PACKAGE_VERSION);
	if (kind == HV_KIND_ABSENT)
		printf("kvm: absent (%s)\n", why != NULL ? why : "unknown");
	else
		printf("kvm: %s\n", hv_kind_name(kind));
	if ((api = hv_api_version()) > 0)
		printf("kvm-api: %d\n", api);
	if (kind == HV_KIND_PVM)
		printf("note: PVM runs guest kernels in an emulator and cannot "
		    "boot Linux; real guests run under tools/kvm-harness\n");
	if (uname(&u) == 0)
		printf("host-kernel: %s %s\n", u.sysname, u.release);
	cpu_model(cpu, sizeof cpu);
	printf("cpu: %s (%ld online)\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
	printf("libevent: %s\n", event_get_version());
	printf("libzstd: %s\n", ZSTD_versionString());
	printf("libarchive: %s\n", archive_version_string());
	printf("libcurl: %s\n", curl_version_info(CURLVERSION_NOW)->version);
	printf("cjson: %s\n", cJSON_Version());
	printf("SMX_HOME: %s\n", smx_home());
	kernel = cli_kernel_path();
	if (access(kernel, R_OK) == 0)
		printf("kernel: %s\n", kernel);
	else
		printf("kernel: %s (not built: run tools/bootstrap)\n", kernel);
	return kind == HV_KIND_ABSENT ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}
