/* card_svg.c - training_curves.svg: training and evaluation loss against the step, and the other
 * evaluation metrics in a second panel, with axes, ticks and a legend. A standalone SVG with no
 * script, no external reference, every text escaped. Pure; any thread.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card_internal.h"

#define SVG_W 800
#define PANEL_H 340
#define M_LEFT 72
#define M_RIGHT 24
#define M_TOP 40
#define M_BOTTOM 48
#define MAX_SERIES 7
#define MAX_POINTS 1000

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                      "#9467bd", "#8c564b", "#e377c2"};

struct series {
    char name[CARD_NAME_MAX + 16];
    int col;      /* eval column, or -1 for the training loss */
    bool markers; /* evaluation points are few: mark each */
    size_t n;
};

static bool point_of(const struct card_data *d, const struct series *s, size_t i, double *ret)
{
    const struct card_log *l = &d->log[i];

    if (s->col < 0) {
        if (!l->has_loss)
            return false;
        *ret = l->loss;
        return true;
    }
    if (!(l->eval_mask & (1u << s->col)))
        return false;
    /* the final evaluate() repeats the last one; plotting it twice adds nothing */
    if (l->after_train_end && i > 0) {
        size_t k;
        for (k = 0; k < i; k++)
            if (d->log[k].step == l->step && (d->log[k].eval_mask & (1u << s->col)))
                return false;
    }
    *ret = l->eval[s->col];
    return true;
}

/* 1, 2 or 5 times a power of ten, giving about five intervals. */
static double nice_step(double range)
{
    double raw = range / 5, mag, f;

    if (!(raw > 0) || !isfinite(raw))
        return 1;
    mag = pow(10, floor(log10(raw)));
    f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

/* A tick label with as many decimals as the step needs, so 4.35 never prints 4.3500000000000005. */
static void tick_label(char *dst, size_t size, double t, double step)
{
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);

    if (fabs(t) < step * 1e-6)
        t = 0;
    snprintf(dst, size, "%.*f", decimals > 12 ? 12 : decimals, t);
}

static void widen(double *lo, double *hi)
{
    if (*hi - *lo <= 0 || !isfinite(*hi - *lo)) {
        double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.05 : 1;
        *lo -= pad;
        *hi += pad;
    }
}

static void panel(struct card_buf *b, const struct card_data *d, struct series *ser, size_t nser,
                  int y0, const char *title)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY, step, t, first;
    int k;
    int pw = SVG_W - M_LEFT - M_RIGHT, ph = PANEL_H - M_TOP - M_BOTTOM;
    int top = y0 + M_TOP, bottom = y0 + PANEL_H - M_BOTTOM;
    size_t s, i;
    char num[64];

    for (s = 0; s < nser; s++) {
        for (i = 0; i < d->n_log; i++) {
            double v;
            if (!point_of(d, &ser[s], i, &v))
                continue;
            xmin = fmin(xmin, d->log[i].step);
            xmax = fmax(xmax, d->log[i].step);
            ymin = fmin(ymin, v);
            ymax = fmax(ymax, v);
        }
    }
    widen(&xmin, &xmax);
    widen(&ymin, &ymax);
    {
        double pad = (ymax - ymin) * 0.05;
        ymin -= pad;
        ymax += pad;
    }
#define PX(x) (M_LEFT + ((x)-xmin) / (xmax - xmin) * pw)
#define PY(y) (bottom - ((y)-ymin) / (ymax - ymin) * ph)

    card_buf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"title\">", M_LEFT, y0 + 24);
    card_put_xml(b, title);
    card_buf_puts(b, "</text>\n");
    card_buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n",
                    M_LEFT, top, pw, ph);
    /* y ticks with grid lines */
    step = nice_step(ymax - ymin);
    first = ceil(ymin / step) * step;
    /* counted, not accumulated: with huge values t += step may never move */
    for (k = 0; k < 40 && (t = first + k * step) <= ymax + step * 1e-9; k++) {
        double y = PY(t);
        tick_label(num, sizeof(num), t, step);
        card_buf_printf(b,
                        "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>"
                        "<text x=\"%d\" y=\"%.1f\" class=\"ytick\">%s</text>\n",
                        M_LEFT, y, M_LEFT + pw, y, M_LEFT - 6, y + 4, num);
    }
    step = nice_step(xmax - xmin);
    if (step < 1 && xmax - xmin >= 1)
        step = 1;
    first = ceil(xmin / step) * step;
    for (k = 0; k < 40 && (t = first + k * step) <= xmax + step * 1e-9; k++) {
        double x = PX(t);
        tick_label(num, sizeof(num), t, step);
        card_buf_printf(b,
                        "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"axis\"/>"
                        "<text x=\"%.1f\" y=\"%d\" class=\"xtick\">%s</text>\n",
                        x, bottom, x, bottom + 5, x, bottom + 18, num);
    }
    card_buf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"xlabel\">step</text>\n", M_LEFT + pw / 2,
                    bottom + 38);
    card_buf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"ylabel\" transform=\"rotate(-90 %d %d)\">",
                    18, top + ph / 2, 18, top + ph / 2);
    card_put_xml(b, title);
    card_buf_puts(b, "</text>\n");

    for (s = 0; s < nser; s++) {
        const char *color = palette[s % (sizeof(palette) / sizeof(palette[0]))];
        size_t every = ser[s].n > MAX_POINTS ? (ser[s].n + MAX_POINTS - 1) / MAX_POINTS : 1,
               seen = 0;

        card_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                        color);
        for (i = 0; i < d->n_log; i++) {
            double v;
            if (!point_of(d, &ser[s], i, &v) || seen++ % every != 0)
                continue;
            card_buf_printf(b, "%.1f,%.1f ", PX(d->log[i].step), PY(v));
        }
        card_buf_puts(b, "\"/>\n");
        if (ser[s].markers) {
            for (i = 0; i < d->n_log; i++) {
                double v;
                if (point_of(d, &ser[s], i, &v))
                    card_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                                    PX(d->log[i].step), PY(v), color);
            }
        }
        /* legend, top right inside the frame */
        card_buf_printf(b,
                        "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/>"
                        "<text x=\"%d\" y=\"%d\" class=\"legend\">",
                        M_LEFT + pw - 200, top + 12 + (int)s * 18, color, M_LEFT + pw - 180,
                        top + 18 + (int)s * 18);
        card_put_xml(b, ser[s].name);
        card_buf_puts(b, "</text>\n");
    }
#undef PX
#undef PY
}

static size_t count_points(const struct card_data *d, struct series *s)
{
    size_t i;
    double v;

    s->n = 0;
    for (i = 0; i < d->n_log; i++)
        if (point_of(d, s, i, &v))
            s->n++;
    s->markers = s->col >= 0 && s->n <= 60;
    return s->n;
}

char *card_svg_render(const struct card_data *d, int *ret_err)
{
    struct series loss[2], other[MAX_SERIES];
    size_t nloss = 0, nother = 0, c;
    struct card_buf b;
    int height;
    char *out;

    *ret_err = 0;
    loss[nloss] = (struct series){.col = -1};
    snprintf(loss[nloss].name, sizeof(loss[0].name), "training loss");
    if (count_points(d, &loss[nloss]) > 0)
        nloss++;
    for (c = 0; c < d->n_eval_cols; c++) {
        struct series s = {.col = (int)c};
        if (count_points(d, &s) == 0)
            continue;
        snprintf(s.name, sizeof(s.name), "eval %s", d->eval_cols[c]);
        if (strcmp(d->eval_cols[c], "loss") == 0)
            loss[nloss++] = s;
        else if (nother < MAX_SERIES)
            other[nother++] = s;
    }
    if (nloss == 0 && nother == 0)
        return NULL;
    height = PANEL_H * ((nloss > 0) + (nother > 0));

    card_buf_init(&b, CARD_MAX_SVG);
    card_buf_printf(&b,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
                    SVG_W, height, SVG_W, height);
    card_buf_puts(&b, "<title>Training curves of ");
    card_put_xml(&b, d->model_name);
    card_buf_puts(&b, "</title>\n<style>\n"
                      ".title{font-size:15px;font-weight:bold}.frame{fill:none;stroke:#444}\n"
                      ".grid{stroke:#ddd}.axis{stroke:#444}.ytick{text-anchor:end}\n"
                      ".xtick,.xlabel,.ylabel{text-anchor:middle}\n"
                      "</style>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    if (nloss > 0)
        panel(&b, d, loss, nloss, 0, "loss");
    if (nother > 0)
        panel(&b, d, other, nother, nloss > 0 ? PANEL_H : 0, "evaluation metrics");
    card_buf_puts(&b, "</svg>\n");
    if (b.err) {
        *ret_err = b.err;
        card_buf_release(&b);
        return NULL;
    }
    out = card_buf_steal(&b);
    if (out == NULL)
        *ret_err = -ENOMEM;
    return out;
}
