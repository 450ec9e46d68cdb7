/* SPDX-License-Identifier: Apache-2.0 */
#include "plot.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define TITLE_HEIGHT 36
#define PANEL_GAP 56            /* room for a panel's name above and time labels below */
#define LEGEND_HEIGHT 40

struct panel {
        double x0, x1, y0, y1;  /* pixel box: x0 left, y0 bottom (0 bytes), y1 top (ymax) */
        uint64_t t0, t1, ymax;
};

static double px_t(const struct panel *p, uint64_t t) {
        return p->x0 + (p->x1 - p->x0) * (double) (t - p->t0) / (double) (p->t1 - p->t0);
}

static double px_y(const struct panel *p, uint64_t bytes) {
        return p->y0 - (p->y0 - p->y1) * (double) bytes / (double) p->ymax;
}

static void xml_text(FILE *f, const char *s) {
        for (; *s; s++) {
                switch (*s) {
                case '&': fputs("&amp;", f); break;
                case '<': fputs("&lt;", f); break;
                case '>': fputs("&gt;", f); break;
                case '"': fputs("&quot;", f); break;
                case '\'': fputs("&apos;", f); break;
                default:
                        /* Control characters are not allowed in XML 1.0. */
                        fputc((unsigned char) *s < 0x20 && *s != '\n' && *s != '\t' ? ' ' : *s, f);
                }
        }
}

/* Human size for axis labels: "512M", "1.5G". */
static const char *axis_size(uint64_t b, char *buf, size_t len) {
        if (b == 0)
                snprintf(buf, len, "0");
        else if (b >= GIB)
                snprintf(buf, len, "%.3gG", (double) b / (double) GIB);
        else
                snprintf(buf, len, "%.3gM", (double) b / (double) MIB);
        return buf;
}

/* A round step giving at most ~5 grid lines up to ymax. */
static uint64_t y_step(uint64_t ymax) {
        uint64_t step = 16 * MIB;

        while (ymax / step > 5)
                step *= 2;
        return step;
}

static uint64_t t_step(uint64_t span) {
        static const uint64_t steps[] = { 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400 };
        for (size_t i = 0; i < ELEMENTSOF(steps); i++)
                if (span / (steps[i] * USEC_PER_SEC) <= 8)
                        return steps[i] * USEC_PER_SEC;
        return 86400 * USEC_PER_SEC;
}

static void draw_axes(FILE *f, const struct panel *p) {
        uint64_t ys = y_step(p->ymax), ts = t_step(p->t1 - p->t0);
        char buf[32];

        fprintf(f, "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n", p->x0, p->y1,
                p->x1 - p->x0, p->y0 - p->y1);
        for (uint64_t b = 0; b <= p->ymax; b += ys) {
                double y = px_y(p, b);
                fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", p->x0, y, p->x1, y);
                fprintf(f, "<text class=\"ylabel\" x=\"%.1f\" y=\"%.1f\">%s</text>\n", p->x0 - 6, y + 4,
                        axis_size(b, buf, sizeof(buf)));
        }
        for (uint64_t t = (p->t0 + ts - 1) / ts * ts; t <= p->t1; t += ts) {
                time_t sec = (time_t) (t / USEC_PER_SEC);
                struct tm tm;
                double x = px_t(p, t);
                strftime(buf, sizeof(buf), ts < 60000000 ? "%H:%M:%S" : "%H:%M", gmtime_r(&sec, &tm));
                fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", x, p->y0, x, p->y1);
                fprintf(f, "<text class=\"xlabel\" x=\"%.1f\" y=\"%.1f\">%s</text>\n", x, p->y0 + 16, buf);
        }
}

static void hline(FILE *f, const struct panel *p, const char *cls, uint64_t bytes, const char *label) {
        char buf[32];
        double y = px_y(p, bytes);

        fprintf(f, "<line class=\"%s\" data-bytes=\"%" PRIu64 "\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", cls,
                bytes, p->x0, y, p->x1, y);
        fprintf(f, "<text class=\"%s-label\" x=\"%.1f\" y=\"%.1f\">%s %s</text>\n", cls, p->x1 - 4, y - 4, label,
                axis_size(bytes, buf, sizeof(buf)));
}

typedef uint64_t (*sample_value)(const struct history_sample *s);
static uint64_t v_target(const struct history_sample *s) { return s->target_bytes; }
static uint64_t v_actual(const struct history_sample *s) { return s->actual_bytes; }

/* One series as a path; an unknown value or a sample outside the span breaks the line. */
static void series(FILE *f, const struct panel *p, const struct plot_vm *vm, const char *cls, sample_value get) {
        bool pen = false;

        fprintf(f, "<path class=\"%s\" d=\"", cls);
        for (size_t i = 0; i < vm->n_samples; i++) {
                const struct history_sample *s = &vm->samples[i];
                uint64_t v = get(s);
                if (v == HISTORY_UNKNOWN || s->realtime_usec < p->t0 || s->realtime_usec > p->t1) {
                        pen = false;
                        continue;
                }
                fprintf(f, "%s%.2f %.2f ", pen ? "L" : "M", px_t(p, s->realtime_usec), px_y(p, v > p->ymax ? p->ymax : v));
                pen = true;
        }
        fputs("\"/>\n", f);
}

static void marks(FILE *f, const struct panel *p, const struct plot_vm *vm) {
        char buf[32];

        for (size_t i = 0; i < vm->n_marks; i++) {
                const struct plot_mark *m = &vm->marks[i];
                double x, y;
                if (m->realtime_usec < p->t0 || m->realtime_usec > p->t1)
                        continue;
                x = px_t(p, m->realtime_usec);
                y = m->to_bytes ? px_y(p, m->to_bytes > p->ymax ? p->ymax : m->to_bytes) : p->y1 + 6;
                fprintf(f, "<g class=\"mark\" data-kind=\"");
                xml_text(f, m->kind);
                fprintf(f, "\" data-time-usec=\"%" PRIu64 "\"><title>", m->realtime_usec);
                xml_text(f, m->kind);
                if (m->to_bytes)
                        fprintf(f, " to %s", axis_size(m->to_bytes, buf, sizeof(buf)));
                fputs(": ", f);
                xml_text(f, m->reason);
                fprintf(f, "</title><path d=\"M%.2f %.2f l-5 -9 h10 z\"/></g>\n", x, y);
        }
}

static uint64_t v_used(const struct history_sample *s) { return history_sample_guest_used(s); }

static void draw_panel(FILE *f, const struct plot_vm *vm, const struct plot_options *o, double top) {
        struct panel p = {
                .x0 = PLOT_MARGIN_LEFT, .x1 = PLOT_WIDTH - PLOT_MARGIN_RIGHT, .y0 = top + PLOT_PANEL_HEIGHT, .y1 = top,
                .t0 = o->t0_usec, .t1 = o->t1_usec,
                /* 5 % above the maximum, so the max line and marks at the max stay visible. */
                .ymax = vm->max_bytes ? vm->max_bytes + vm->max_bytes / 20 : GIB,
        };

        fprintf(f, "<g class=\"vm\" data-vm=\"");
        xml_text(f, vm->name);
        fprintf(f, "\" data-t0=\"%" PRIu64 "\" data-t1=\"%" PRIu64 "\" data-x0=\"%.1f\" data-x1=\"%.1f\" "
                "data-y0=\"%.1f\" data-y1=\"%.1f\" data-ymax=\"%" PRIu64 "\">\n", p.t0, p.t1, p.x0, p.x1, p.y0, p.y1,
                p.ymax);
        fprintf(f, "<text class=\"vmname\" x=\"%.1f\" y=\"%.1f\">", p.x0, top - 8);
        xml_text(f, vm->name);
        fputs("</text>\n", f);
        draw_axes(f, &p);
        hline(f, &p, "max", vm->max_bytes, "max");
        hline(f, &p, "min", vm->min_bytes, "min");
        series(f, &p, vm, "used", v_used);
        series(f, &p, vm, "actual", v_actual);
        series(f, &p, vm, "target", v_target);
        marks(f, &p, vm);
        fputs("</g>\n", f);
}

static const char style[] =
        "<style>\n"
        "text { font-family: sans-serif; font-size: 12px; fill: #222; }\n"
        ".title { font-size: 16px; font-weight: bold; } .vmname { font-size: 14px; font-weight: bold; }\n"
        ".ylabel { text-anchor: end; } .xlabel { text-anchor: middle; }\n"
        ".min-label, .max-label { text-anchor: end; font-size: 11px; }\n"
        ".frame { fill: #fff; stroke: #888; } .grid { stroke: #e4e4e4; }\n"
        ".min { stroke: #c62828; stroke-dasharray: 6 4; stroke-width: 1.5; }\n"
        ".max { stroke: #777; stroke-dasharray: 2 4; }\n"
        "path.target { fill: none; stroke: #1565c0; stroke-width: 2; stroke-dasharray: 5 3; }\n"
        "path.actual { fill: none; stroke: #2e7d32; stroke-width: 2; }\n"
        "path.used { fill: none; stroke: #ef6c00; stroke-width: 1.5; }\n"
        ".mark path { fill: #6a1b9a; }\n"
        "</style>\n";

static void legend(FILE *f, double y) {
        static const struct { const char *cls, *label; } items[] = {
                { "target", "target" }, { "actual", "balloon actual" }, { "used", "guest use (actual - available)" },
                { "min", "minimum" },
        };
        double x = PLOT_MARGIN_LEFT;

        for (size_t i = 0; i < ELEMENTSOF(items); i++) {
                const char *el = strcmp(items[i].cls, "min") == 0 ? "line" : "path";
                if (el[0] == 'l')
                        fprintf(f, "<line class=\"min\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", x, y, x + 24, y);
                else
                        fprintf(f, "<path class=\"%s legend\" d=\"M%.1f %.1f h24\"/>", items[i].cls, x, y);
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x + 30, y + 4, items[i].label);
                x += 60 + 7.0 * (double) strlen(items[i].label);
        }
        fprintf(f, "<g class=\"mark\"><path d=\"M%.1f %.1f l-5 -9 h10 z\"/></g>", x + 6, y + 4);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">decision (hover for the reason)</text>\n", x + 18, y + 4);
}

int plot_render_svg(const struct plot_vm *vms, size_t n_vms, const struct plot_options *o, char **ret_text,
                    size_t *ret_len) {
        double height = TITLE_HEIGHT + (double) n_vms * (PLOT_PANEL_HEIGHT + PANEL_GAP) + LEGEND_HEIGHT;
        char *buf = NULL, from[32], to[32];
        size_t len = 0;
        time_t a = (time_t) (o->t0_usec / USEC_PER_SEC), b = (time_t) (o->t1_usec / USEC_PER_SEC);
        struct tm tm;
        FILE *f;

        if (n_vms == 0 || o->t1_usec <= o->t0_usec)
                return -EINVAL;
        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        strftime(from, sizeof(from), "%Y-%m-%d %H:%M:%S", gmtime_r(&a, &tm));
        strftime(to, sizeof(to), "%H:%M:%S UTC", gmtime_r(&b, &tm));
        fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\">\n",
                PLOT_WIDTH, height, PLOT_WIDTH, height);
        fputs(style, f);
        fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#fafafa\"/>\n<text class=\"title\" x=\"%d\" y=\"24\">",
                PLOT_MARGIN_LEFT);
        xml_text(f, o->title ? o->title : "ppn-pool memory");
        fprintf(f, " \xe2\x80\x94 %s to %s</text>\n", from, to);
        for (size_t i = 0; i < n_vms; i++)
                draw_panel(f, &vms[i], o, TITLE_HEIGHT + PANEL_GAP / 2.0 + (double) i * (PLOT_PANEL_HEIGHT + PANEL_GAP));
        legend(f, height - LEGEND_HEIGHT / 2.0);
        fputs("</svg>\n", f);
        if (ferror(f) || fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret_text = buf;
        *ret_len = len;
        return 0;
}
