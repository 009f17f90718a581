/*
 * Lists /dev and /dev/sgx as programs and shells do: opendir/readdir (and readdir64),
 * rewinddir, fdopendir with readdir_r, glob of /dev/sgx* and of /dev/sgx/ *, scandir. Prints the SGX entries
 * with their d_type (c: DT_CHR, d: DT_DIR, l: DT_LNK) and how often each came.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char kind(unsigned char type) {
    return type == DT_CHR ? 'c' : type == DT_DIR ? 'd' : type == DT_LNK ? 'l' : '?';
}

/* The entries of `path` whose names start with `prefix`, in the order readdir gives them. */
static void list(const char *how, const char *path, const char *prefix, int use64) {
    DIR *dir = opendir(path);
    if (!dir) {
        perror(path);
        return;
    }
    printf("%s %s:", how, path);
    for (int round = 0; round < 2; round++) {
        int total = 0;
        for (;;) {
            struct dirent64 *e64 = NULL;
            struct dirent *e = NULL;
            if (use64)
                e64 = readdir64(dir);
            else
                e = readdir(dir);
            const char *name = use64 ? (e64 ? e64->d_name : NULL) : (e ? e->d_name : NULL);
            if (!name)
                break;
            total++;
            if (strncmp(name, prefix, strlen(prefix)) == 0 && round == 0)
                printf(" %s/%c", name, kind(use64 ? e64->d_type : e->d_type));
        }
        if (round == 0) {
            printf(" (%d entries)", total > 0);
            rewinddir(dir);
        } else {
            printf(" rewound %d", total > 0);
        }
    }
    printf("\n");
    closedir(dir);
}

static void globbed(const char *pattern) {
    glob_t g;
    memset(&g, 0, sizeof g);
    int r = glob(pattern, GLOB_MARK, NULL, &g);
    printf("glob %s: %d", pattern, r);
    for (size_t i = 0; i < g.gl_pathc; i++)
        printf(" %s", g.gl_pathv[i]);
    printf(" altdirfunc %d\n", (g.gl_flags & GLOB_ALTDIRFUNC) != 0);
    globfree(&g);
}

int main(void) {
    list("readdir", "/dev", "sgx", 0);
    list("readdir64", "/dev/", "sgx", 1);
    list("readdir", "/dev/sgx", "", 0);
    /* find's fts lists through fdopendir; readdir_r is deprecated but still used. */
    DIR *dir = fdopendir(open("/dev", O_RDONLY | O_DIRECTORY));
    struct dirent entry, *result;
    printf("fdopendir readdir_r /dev:");
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    while (dir && readdir_r(dir, &entry, &result) == 0 && result == &entry)
        if (strncmp(entry.d_name, "sgx", 3) == 0)
            printf(" %s/%c", entry.d_name, kind(entry.d_type));
    printf("\n");
    if (dir)
        closedir(dir);
    globbed("/dev/sgx*");
    globbed("/dev/sgx/*");
    struct dirent **names;
    int n = scandir("/dev/sgx", &names, NULL, alphasort);
    printf("scandir /dev/sgx: %d", n);
    for (int i = 0; i < n; i++) {
        printf(" %s/%c", names[i]->d_name, kind(names[i]->d_type));
        free(names[i]);
    }
    if (n >= 0)
        free(names);
    printf("\n");
    return 0;
}
