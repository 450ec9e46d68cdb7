/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl's one command-line parser and the text it prints, both read from the command tables. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ppnctl.h"

/* Column where an option's help starts in `ppnctl COMMAND --help`. */
#define OPTION_HELP_COL 26

bool ctl_is_help(const char *w) {
        return strcmp(w, "--help") == 0 || strcmp(w, "-h") == 0;
}

/* "USAGE NOTE" (or USAGE alone) into buf. */
static const char *usage_text(const struct ctl_command *c, char *buf, size_t len) {
        snprintf(buf, len, "%s%s%s", c->usage, c->note ? " " : "", c->note ? c->note : "");
        return buf;
}

void ctl_print_wrapped(FILE *f, const char *text, size_t indent, size_t first_col) {
        size_t col = first_col;
        bool line_start = first_col == 0;

        text += strspn(text, " ");
        while (*text) {
                size_t word = strcspn(text, " ");
                if (!line_start && col + 1 + word > 80 && col > indent) {
                        fprintf(f, "\n%*s", (int) indent, "");
                        col = indent;
                } else if (!line_start) {
                        fputc(' ', f);
                        col++;
                }
                fprintf(f, "%.*s", (int) word, text);
                col += word;
                line_start = false;
                text += word;
                text += strspn(text, " ");
        }
        fputc('\n', f);
}

void ctl_print_subcommands(FILE *f, const struct ctl_command *table) {
        char buf[512];

        fprintf(f, "usage:\n");
        for (size_t i = 0; table[i].name; i++) {
                /* --help (stdout) is wrapped to 80 columns; a usage error keeps one line per usage. */
                if (f != stdout) {
                        fprintf(f, "  ppnctl %s\n", usage_text(&table[i], buf, sizeof(buf)));
                        continue;
                }
                fputs("  ppnctl", f);
                ctl_print_wrapped(f, usage_text(&table[i], buf, sizeof(buf)), 4, 8);
        }
}

/* "  -x, --name ARG" then its help from OPTION_HELP_COL (on the next line if the name is long). */
static void print_option(const char *name, char short_name, const char *arg, const char *help) {
        char shopt[8] = "";
        int col;

        if (short_name)
                snprintf(shopt, sizeof(shopt), "-%c, ", short_name);
        col = printf("  %s--%s%s%s", shopt, name, arg ? " " : "", arg ? arg : "");
        if (col + 2 > OPTION_HELP_COL) {
                putchar('\n');
                col = 0;
        }
        printf("%*s", OPTION_HELP_COL - 1 - col, "");   /* ctl_print_wrapped() puts the last space */
        ctl_print_wrapped(stdout, help, OPTION_HELP_COL, OPTION_HELP_COL);
}

static void print_options(const struct ctl_command *c) {
        if (!c->json && !(c->options && c->options[0].name))
                return;
        printf("\noptions:\n");
        for (const struct ctl_option *o = c->options; o && o->name; o++)
                print_option(o->name, o->short_name, o->arg, o->help);
        if (c->json)
                print_option("json", 0, NULL, "machine-readable output, sizes in bytes");
}

void ctl_help(const struct ctl_command *c) {
        if (c->subcommands)
                ctl_print_subcommands(stdout, c->subcommands);
        else {
                fputs("usage: ppnctl", stdout);
                ctl_print_wrapped(stdout, c->usage, 4, 13);
        }
        if (c->note) {
                putchar('\n');
                ctl_print_wrapped(stdout, c->note, 0, 0);
        }
        putchar('\n');
        ctl_print_wrapped(stdout, c->help, 0, 0);
        print_options(c);
}

int ctl_usage_error(const struct ctl_args *a, const char *fmt, ...) {
        char buf[512];
        va_list ap;

        fprintf(stderr, "ppnctl %s: ", a->name);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nusage: ppnctl %s\n", usage_text(a->cmd, buf, sizeof(buf)));
        return CTL_ERR_USAGE;
}

const char *ctl_arg(const struct ctl_args *a, const char *name) {
        for (size_t i = a->n_given; i > 0; i--)
                if (strcmp(a->given[i - 1].opt->name, name) == 0)
                        return a->given[i - 1].value;
        return NULL;
}

bool ctl_flag(const struct ctl_args *a, const char *name) {
        for (size_t i = 0; i < a->n_given; i++)
                if (strcmp(a->given[i].opt->name, name) == 0)
                        return true;
        return false;
}

/* The option w ("--name", "--name=value", "-x") names in c's table; *ret_eq at its '='. */
static const struct ctl_option *find_option(const struct ctl_command *c, const char *w, const char **ret_eq) {
        const char *eq = strchr(w, '=');
        size_t len = eq ? (size_t) (eq - w) : strlen(w);

        *ret_eq = w[1] == '-' ? eq : NULL;
        for (const struct ctl_option *o = c->options; o && o->name; o++) {
                if (w[1] != '-' && o->short_name && w[1] == o->short_name && !w[2])
                        return o;
                if (w[1] == '-' && len == strlen(o->name) + 2 && strncmp(w + 2, o->name, len - 2) == 0)
                        return o;
        }
        return NULL;
}

/* The option at argv[*i] (and its value, maybe argv[*i + 1]) into a. */
static int take_option(int argc, char **argv, int *i, struct ctl_args *a) {
        const char *w = argv[*i], *eq;
        const struct ctl_option *o = find_option(a->cmd, w, &eq);
        struct ctl_given *gv = &a->given[a->n_given];

        if (!o && a->cmd->json && strcmp(w, "--json") == 0)
                return a->json = true, 0;
        if (!o)
                return ctl_usage_error(a, "unknown option '%s'", w);
        if (a->n_given == CTL_MAX_GIVEN)
                return ctl_usage_error(a, "more than %d options", CTL_MAX_GIVEN);
        *gv = (struct ctl_given) { .opt = o, .value = eq ? eq + 1 : NULL, .inline_value = eq };
        if (!o->arg && eq)
                return ctl_usage_error(a, "option '--%s' takes no value", o->name);
        if (o->arg && !eq && *i + 1 >= argc)
                return ctl_usage_error(a, "option '%s' needs a value", w);
        if (o->arg && !eq)
                gv->value = argv[++*i];
        a->n_given++;
        return 0;
}

static int check_count(const struct ctl_args *a) {
        const struct ctl_command *c = a->cmd;
        int n = a->argc - 1;

        if (n > c->max_args && c->max_args == 0)
                return ctl_usage_error(a, "unexpected argument '%s'", a->argv[1]);
        if (n < c->min_args || (c->max_args >= 0 && n > c->max_args))
                return ctl_usage_error(a, "%s", c->args_error ? c->args_error : "wrong number of arguments");
        return 0;
}

/* "--help" or "-h" anywhere before "--", not as another option's value ("--qemu-arg -h"). */
static bool wants_help(int argc, char **argv, const struct ctl_args *a) {
        const struct ctl_option *o;
        const char *eq;

        for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
                if (ctl_is_help(argv[i]))
                        return true;
                o = argv[i][0] == '-' ? find_option(a->cmd, argv[i], &eq) : NULL;
                if (o && o->arg && !eq)
                        i++;
        }
        return false;
}

/* Options and operands of a command (not a group); the operands end up in argv[1..]. */
static int parse_options(int argc, char **argv, struct ctl_args *a) {
        int out = 1, r;

        if (wants_help(argc, argv, a))
                return a->help = true, 0;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0) {
                        while (++i < argc)
                                argv[out++] = argv[i];
                } else if (argv[i][0] != '-' || !argv[i][1])
                        argv[out++] = argv[i];
                else if ((r = take_option(argc, argv, &i, a)) < 0)
                        return r;
        }
        a->argc = out;
        a->argv = argv;
        return check_count(a);
}

static const struct ctl_command *find_command(const struct ctl_command *table, const char *name) {
        for (size_t i = 0; table[i].name; i++)
                if (strcmp(table[i].name, name) == 0)
                        return &table[i];
        return NULL;
}

static int subcommand(const struct ctl_command *group, const struct ctl_command *c, int argc, char **argv,
                      struct ctl_args *a) {
        a->cmd = c;
        snprintf(a->name, sizeof(a->name), "%s %s", group->name, c->name);
        return parse_options(argc, argv, a);
}

static int unknown_subcommand(const struct ctl_command *group, int argc, char **argv) {
        if (argc >= 2)
                fprintf(stderr, "ppnctl %s: unknown subcommand '%s'\n", group->name, argv[1]);
        else
                fprintf(stderr, "ppnctl %s: missing subcommand\n", group->name);
        ctl_print_subcommands(stderr, group->subcommands);
        return CTL_ERR_USAGE;
}

int ctl_parse(const struct ctl_command *c, bool json, int argc, char **argv, struct ctl_args *a) {
        const struct ctl_command *sub;

        *a = (struct ctl_args) { .cmd = c, .json = json, .argc = argc, .argv = argv };
        snprintf(a->name, sizeof(a->name), "%s", c->name);
        if (!c->subcommands)
                return parse_options(argc, argv, a);
        if (argc >= 2 && ctl_is_help(argv[1]))
                return a->help = true, 0;
        if (argc >= 2 && (sub = find_command(c->subcommands, argv[1])))
                return subcommand(c, sub, argc - 1, argv + 1, a);
        if (c->default_sub && (argc < 2 || argv[1][0] == '-') && (sub = find_command(c->subcommands, c->default_sub)))
                return subcommand(c, sub, argc, argv, a);
        return unknown_subcommand(c, argc, argv);
}

const struct ctl_command *ctl_find_command(const char *name) {
        return find_command(ctl_commands, name);
}
