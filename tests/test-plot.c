/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The history ring (bound, order, search, JSON) and the SVG plot: well-formed (xmllint), and
 * every series point maps back, through the panel's own scale attributes, to the sample it was
 * drawn from; gaps for unknown values; marks carry their reasons, escaped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "history.h"
#include "plot.h"
#include "util.h"

#define T0 UINT64_C(1790000000000000)   /* a wall clock in 2026, microseconds */
#define SEC UINT64_C(1000000)

static void test_ring_bound_and_order(void **state) {
        struct history_ring h;

        assert_int_equal(history_ring_init(&h, 0), -EINVAL);
        assert_int_equal(history_ring_init(&h, 5), 0);
        for (uint64_t i = 0; i < 12; i++)
                history_ring_add(&h, &(struct history_sample) { .realtime_usec = T0 + i * SEC, .target_bytes = i });
        assert_int_equal(h.count, 5);
        for (size_t i = 0; i < 5; i++)
                assert_int_equal(history_ring_get(&h, i)->target_bytes, 7 + i);
        assert_int_equal(history_ring_first_since(&h, 0), 0);
        assert_int_equal(history_ring_first_since(&h, T0 + 9 * SEC), 2);
        assert_int_equal(history_ring_first_since(&h, T0 + 9 * SEC - 1), 2);
        assert_int_equal(history_ring_first_since(&h, T0 + 100 * SEC), 5);
        history_ring_done(&h);
        assert_int_equal(HISTORY_SAMPLES_MAX, 3600);
}

/* The memory budget: the default 8 MiB keeps the hour for 58 VMs, 104 samples each at 2,000;
 * never fewer than 60 or more than 3600. A resize keeps the newest samples, in order. */
static void test_ring_budget_and_resize(void **state) {
        struct history_ring h;

        assert_int_equal(sizeof(struct history_sample), 40);
        assert_int_equal(history_capacity_for(8 * MIB, 0), HISTORY_SAMPLES_MAX);
        assert_int_equal(history_capacity_for(8 * MIB, 58), HISTORY_SAMPLES_MAX);
        assert_int_equal(history_capacity_for(8 * MIB, 59), 8 * MIB / 59 / 40);
        assert_int_equal(history_capacity_for(8 * MIB, 2000), 104);
        assert_int_equal(history_capacity_for(8 * MIB, 100000), HISTORY_SAMPLES_MIN);
        assert_int_equal(history_capacity_for(UINT64_MAX, 1), HISTORY_SAMPLES_MAX);

        assert_int_equal(history_ring_init(&h, 8), 0);
        for (uint64_t i = 0; i < 11; i++)       /* wrapped: 3..10 held, head not at 0 */
                history_ring_add(&h, &(struct history_sample) { .realtime_usec = T0 + i * SEC, .target_bytes = i });
        assert_int_equal(history_ring_resize(&h, 0), -EINVAL);
        assert_int_equal(h.count, 8);
        assert_int_equal(history_ring_resize(&h, 5), 0);
        assert_int_equal(h.capacity, 5);
        assert_int_equal(h.count, 5);
        for (size_t i = 0; i < 5; i++)
                assert_int_equal(history_ring_get(&h, i)->target_bytes, 6 + i);
        assert_int_equal(history_ring_resize(&h, 20), 0);
        assert_int_equal(h.count, 5);
        history_ring_add(&h, &(struct history_sample) { .realtime_usec = T0 + 11 * SEC, .target_bytes = 11 });
        assert_int_equal(h.count, 6);
        for (size_t i = 0; i < 6; i++)
                assert_int_equal(history_ring_get(&h, i)->target_bytes, 6 + i);
        assert_int_equal(history_ring_first_since(&h, T0 + 8 * SEC), 2);
        history_ring_done(&h);
}

static void test_sample_json(void **state) {
        struct history_sample s = { T0, 512 * MIB, HISTORY_UNKNOWN, 100 * MIB, 480 * MIB }, back;
        json_object *o = history_sample_to_json(&s), *bad;

        assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                            "{\"time_usec\":1790000000000000,\"target_bytes\":536870912,\"actual_bytes\":null,"
                            "\"guest_available_bytes\":104857600,\"guest_total_bytes\":503316480}");
        assert_int_equal(history_sample_from_json(o, &back), 0);
        assert_memory_equal(&s, &back, sizeof(s));
        assert_int_equal(history_sample_guest_used(&s), HISTORY_UNKNOWN); /* actual unknown */
        s.actual_bytes = 480 * MIB;
        assert_int_equal(history_sample_guest_used(&s), 380 * MIB);
        s.actual_bytes = HISTORY_UNKNOWN;
        json_object_put(o);
        o = history_sample_to_array(&s);
        assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                            "[1790000000000000,536870912,null,104857600,503316480]");
        memset(&back, 0, sizeof(back));
        assert_int_equal(history_sample_from_array(o, &back), 0);
        assert_memory_equal(&s, &back, sizeof(s));
        json_object_array_del_idx(o, 4, 1);
        assert_int_equal(history_sample_from_array(o, &back), -EINVAL);
        bad = json_tokener_parse("{\"time_usec\":1,\"target_bytes\":\"x\",\"actual_bytes\":null,"
                                 "\"guest_available_bytes\":null,\"guest_total_bytes\":null}");
        assert_int_equal(history_sample_from_json(bad, &back), -EINVAL);
        json_object_put(bad);
        json_object_put(o);
        s.actual_bytes = 480 * MIB;
        s.guest_available_bytes = s.actual_bytes + 1;
        assert_int_equal(history_sample_guest_used(&s), HISTORY_UNKNOWN);
}

/* 60 s of a VM shrinking from 2G to 1G, with the actual lagging and a 5 s stats gap. */
static struct history_sample samples[60];
static const struct plot_mark marks[] = {
        { T0 + 10 * SEC, 1536 * MIB, "shrink-node", "host MemAvailable 200 MiB < 256 MiB; reclaim 512 MiB <idle>" },
        { T0 + 30 * SEC, 0, "override", "balloon moved to 1.2G behind our back & followed" },
        { T0 + 500 * SEC, 1 * GIB, "late", "outside the span: not drawn" },
};

static void make_run(void) {
        for (uint64_t i = 0; i < 60; i++) {
                uint64_t target = i < 10 ? 2 * GIB : i < 30 ? 1536 * MIB : 1 * GIB;
                samples[i] = (struct history_sample) {
                        .realtime_usec = T0 + i * SEC, .target_bytes = target,
                        .actual_bytes = i == 0 ? 2 * GIB : samples[i - 1].actual_bytes - (samples[i - 1].actual_bytes - target) / 2,
                        .guest_available_bytes = i >= 40 && i < 45 ? HISTORY_UNKNOWN : 300 * MIB,
                        .guest_total_bytes = i >= 40 && i < 45 ? HISTORY_UNKNOWN : 900 * MIB,
                };
        }
}

static char *render(const struct plot_vm *vms, size_t n, uint64_t t0, uint64_t t1) {
        struct plot_options o = { .t0_usec = t0, .t1_usec = t1, .title = "test & <run>" };
        char *svg = NULL;
        size_t len;

        assert_int_equal(plot_render_svg(vms, n, &o, &svg, &len), 0);
        assert_int_equal(strlen(svg), len);
        return svg;
}

static void assert_well_formed(const char *svg) {
        char path[] = "/tmp/test-plot-XXXXXX.svg", cmd[128];
        int fd = mkstemps(path, 4), st;

        assert_true(fd >= 0);
        assert_int_equal(write(fd, svg, strlen(svg)), (ssize_t) strlen(svg));
        close(fd);
        if (system("command -v xmllint >/dev/null") != 0) {
                unlink(path);
                print_message("xmllint not installed (Debian package libxml2-utils)\n");
                skip();
        }
        snprintf(cmd, sizeof(cmd), "xmllint --noout %s", path);
        st = system(cmd);
        unlink(path);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static double attr(const char *from, const char *name) {
        char key[64];
        const char *p;

        snprintf(key, sizeof(key), " %s=\"", name);
        p = strstr(from, key);
        assert_non_null(p);
        return strtod(p + strlen(key), NULL);
}

/* Inverts one series path of the panel for vm through the panel's scale and checks it against
 * the samples: same count, same times and values (within 0.01 px), and a new M after each gap. */
static void check_series(const char *svg, const char *vm, const char *cls, uint64_t (*get)(const struct history_sample *)) {
        char key[128];
        const char *g, *d;
        double x0, x1, y0, y1, t0, t1, ymax;
        size_t i = 0;
        bool prev_known = false;

        snprintf(key, sizeof(key), "<g class=\"vm\" data-vm=\"%s\"", vm);
        g = strstr(svg, key);
        assert_non_null(g);
        x0 = attr(g, "data-x0"), x1 = attr(g, "data-x1"), y0 = attr(g, "data-y0"), y1 = attr(g, "data-y1");
        t0 = attr(g, "data-t0"), t1 = attr(g, "data-t1"), ymax = attr(g, "data-ymax");
        snprintf(key, sizeof(key), "<path class=\"%s\" d=\"", cls);
        d = strstr(g, key);
        assert_non_null(d);
        d += strlen(key);
        for (size_t k = 0; k < ELEMENTSOF(samples); k++) {
                uint64_t v = get(&samples[k]);
                char cmd;
                double x, y;
                if (v == HISTORY_UNKNOWN) {
                        prev_known = false;
                        continue;
                }
                assert_int_equal(sscanf(d, "%c%lf %lf ", &cmd, &x, &y), 3);
                assert_int_equal(cmd, prev_known ? 'L' : 'M');
                assert_true(fabs(t0 + (x - x0) / (x1 - x0) * (t1 - t0) - (double) samples[k].realtime_usec) <
                            0.01 * (t1 - t0) / (x1 - x0));
                assert_true(fabs((y0 - y) / (y0 - y1) * ymax - (double) v) < 0.01 * ymax / (y0 - y1));
                d = strchr(strchr(d, ' ') + 1, ' ') + 1;
                prev_known = true;
                i++;
        }
        assert_int_equal(*d, '"');
        assert_true(i > 0);
}

static uint64_t get_target(const struct history_sample *s) { return s->target_bytes; }
static uint64_t get_actual(const struct history_sample *s) { return s->actual_bytes; }

static size_t count(const char *hay, const char *needle) {
        size_t n = 0;
        for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
                n++;
        return n;
}

static void test_plot_series_match(void **state) {
        make_run();
        struct plot_vm vms[] = {
                { "db", 1 * GIB, 2 * GIB, samples, ELEMENTSOF(samples), marks, ELEMENTSOF(marks) },
                { "web", 512 * MIB, 1 * GIB, samples, 0, NULL, 0 },
        };
        char *svg = render(vms, 2, T0, T0 + 59 * SEC);

        if (getenv("PPN_PLOT_DUMP")) { /* to look at it */
                FILE *f = fopen(getenv("PPN_PLOT_DUMP"), "we");
                fputs(svg, f);
                fclose(f);
        }
        assert_well_formed(svg);
        check_series(svg, "db", "target", get_target);
        check_series(svg, "db", "actual", get_actual);
        check_series(svg, "db", "used", history_sample_guest_used);
        /* The minimum and maximum lines carry their values. */
        assert_non_null(strstr(svg, "<line class=\"min\" data-bytes=\"1073741824\""));
        assert_non_null(strstr(svg, "<line class=\"max\" data-bytes=\"2147483648\""));
        /* Two marks inside the span (one per panel count), the late one left out; reasons escaped. */
        assert_int_equal(count(svg, "<g class=\"mark\" data-kind="), 2);
        assert_non_null(strstr(svg, "<title>shrink-node to 1.5G: host MemAvailable 200 MiB &lt; 256 MiB; reclaim 512 MiB &lt;idle&gt;</title>"));
        assert_non_null(strstr(svg, "behind our back &amp; followed"));
        assert_non_null(strstr(svg, "test &amp; &lt;run&gt;"));
        /* A VM without samples still gets its panel, with empty series. */
        assert_non_null(strstr(svg, "data-vm=\"web\""));
        assert_int_equal(count(svg, "<path class=\"actual\" d=\"\"/>"), 1);
        free(svg);
}

/* Samples outside the span are not drawn, and break the line. */
static void test_plot_clips(void **state) {
        make_run();
        struct plot_vm vm = { "db", 1 * GIB, 2 * GIB, samples, ELEMENTSOF(samples), NULL, 0 };
        char *svg = render(&vm, 1, T0 + 20 * SEC, T0 + 29 * SEC);
        const char *d = strstr(svg, "<path class=\"target\" d=\"");

        assert_well_formed(svg);
        assert_non_null(d);
        d = strchr(d, 'd') + 3;
        assert_int_equal(*d, 'M');
        assert_int_equal(count(d, "L") - count(strstr(d, "\"/>"), "L"), 9);
        free(svg);
}

static void test_plot_invalid(void **state) {
        struct plot_vm vm = { "db", 1 * GIB, 2 * GIB, NULL, 0, NULL, 0 };
        struct plot_options o = { .t0_usec = T0, .t1_usec = T0 };
        char *svg = NULL;
        size_t len;

        assert_int_equal(plot_render_svg(&vm, 1, &o, &svg, &len), -EINVAL);
        o.t1_usec = T0 + SEC;
        assert_int_equal(plot_render_svg(&vm, 0, &o, &svg, &len), -EINVAL);
        assert_null(svg);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ring_bound_and_order),
                cmocka_unit_test(test_ring_budget_and_resize),
                cmocka_unit_test(test_sample_json),
                cmocka_unit_test(test_plot_series_match),
                cmocka_unit_test(test_plot_clips),
                cmocka_unit_test(test_plot_invalid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
