package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes r as one self-contained HTML page: the summary, the
// latency histogram, throughput, allowed and denied, errors and p99 over
// time, with the scenario's events marked. The charts are inline SVG; the
// page loads nothing from anywhere, so it opens offline.
func (r *Result) WriteHTML(w io.Writer) error {
	var sum strings.Builder
	_ = r.WriteSummary(&sum)
	xs := make([]float64, len(r.Series))
	checks := make([]float64, len(r.Series))
	allowed := make([]float64, len(r.Series))
	denied := make([]float64, len(r.Series))
	errs := make([]float64, len(r.Series))
	p99 := make([]float64, len(r.Series))
	n := 0
	for _, p := range r.Series {
		if p.Len < 0.1 {
			continue // too short a tail for a rate
		}
		xs[n] = p.T
		checks[n] = float64(p.Checks) / p.Len
		allowed[n] = float64(p.Allowed) / p.Len
		denied[n] = float64(p.Denied) / p.Len
		errs[n] = float64(p.Errors) / p.Len
		p99[n] = p.P99 / 1e3
		n++
	}
	xs, checks, allowed, denied, errs, p99 = xs[:n], checks[:n], allowed[:n], denied[:n], errs[:n], p99[:n]
	data := struct {
		R          *Result
		Summary    string
		Throughput template.HTML
		Decisions  template.HTML
		Latency    template.HTML
		Histogram  template.HTML
	}{
		R:       r,
		Summary: sum.String(),
		Throughput: lineChart("chart-throughput", "checks per second", xs, []series{
			{"checks/s", "#1f6feb", checks}, {"errors/s", "#d1242f", errs},
		}, r.Events),
		Decisions: lineChart("chart-decisions", "allowed and denied per second", xs, []series{
			{"allowed", "#1a7f37", allowed}, {"denied", "#9a6700", denied},
		}, r.Events),
		Latency: lineChart("chart-latency", "call latency p99 per second (ms)", xs, []series{
			{"p99 ms", "#8250df", p99},
		}, r.Events),
		Histogram: histogramChart("chart-histogram", r.Histogram, r.Latency),
	}
	return reportTmpl.Execute(w, data)
}

type series struct {
	name  string
	color string
	ys    []float64
}

const (
	chartW, chartH         = 820, 240
	padL, padR, padT, padB = 70, 20, 30, 40
	plotW, plotH           = chartW - padL - padR, chartH - padT - padB
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e4)/100)
	case v >= 1e3:
		return fmt.Sprintf("%gk", math.Round(v/10)/100)
	}
	return fmt.Sprintf("%g", math.Round(v*100)/100)
}

// lineChart draws series over xs (seconds) as an SVG, with events as
// dashed vertical lines.
func lineChart(id, title string, xs []float64, ss []series, events []Event) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="%s" class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s">`, id, chartW, chartH, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="18" class="title">%s</text>`, padL, template.HTMLEscapeString(title))
	xmax := 1.0
	if n := len(xs); n > 0 {
		xmax = math.Max(xs[n-1]+1, 1)
	}
	for _, e := range events {
		xmax = math.Max(xmax, e.At.D().Seconds())
	}
	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			ymax = math.Max(ymax, y)
		}
	}
	ymax = niceMax(ymax)
	px := func(x float64) float64 { return padL + x/xmax*plotW }
	py := func(y float64) float64 { return padT + plotH - y/ymax*plotH }
	// Axes and grid.
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/>`, padL, padL+plotW, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>`, padL-6, py(y)+4, fmtNum(y))
	}
	for i := 0; i <= 5; i++ {
		x := xmax * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="tick" text-anchor="middle">%ss</text>`, px(x), padT+plotH+16, fmtNum(x))
	}
	// Events.
	for i, e := range events {
		x := px(e.At.D().Seconds())
		label := e.Kind
		if e.Node != "" {
			label += " " + e.Node
		}
		fmt.Fprintf(&b, `<g class="event"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d"/><text x="%.1f" y="%d">%s</text><title>%s at %.2fs: %d errors after, recovered after %.1fs</title></g>`,
			x, x, padT, padT+plotH, x+3, padT+10+(i%6)*12, template.HTMLEscapeString(label),
			template.HTMLEscapeString(label+" "+e.Detail), e.At.D().Seconds(), e.ErrorsAfter, e.RecoveredAfter.D().Seconds())
	}
	// Lines, each point at the middle of its second.
	for si, s := range ss {
		var pts strings.Builder
		for i, y := range s.ys {
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(xs[i]+0.5), py(y))
		}
		fmt.Fprintf(&b, `<polyline class="series" data-series="%s" points="%s" stroke="%s"/>`, template.HTMLEscapeString(s.name), pts.String(), s.color)
		for i, y := range s.ys {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s"><title>%s at %gs: %s</title></circle>`, px(xs[i]+0.5), py(y), s.color, template.HTMLEscapeString(s.name), xs[i], fmtNum(y))
		}
		lx := padL + plotW - 140
		ly := padT + 14 + si*16
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" class="legend">%s</text>`, lx, ly-9, s.color, lx+14, ly, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// histogramChart draws the latency histogram on a logarithmic axis, with
// the percentiles marked.
func histogramChart(id string, hs []Bucket, l Latency) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="%s" class="chart" viewBox="0 0 %d %d" role="img" aria-label="latency histogram">`, id, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="18" class="title">calls by latency (log axis): p50 %s, p99 %s, p99.9 %s, max %s</text>`,
		padL, fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max))
	if len(hs) == 0 {
		b.WriteString(`</svg>`)
		return template.HTML(b.String())
	}
	lo := math.Log10(hs[0].UpTo / 1.19)
	hi := math.Log10(hs[len(hs)-1].UpTo)
	if hi-lo < 1 {
		hi = lo + 1
	}
	var cmax int64
	for _, h := range hs {
		cmax = max(cmax, h.Count)
	}
	ymax := niceMax(float64(cmax))
	px := func(us float64) float64 { return padL + (math.Log10(us)-lo)/(hi-lo)*plotW }
	py := func(y float64) float64 { return padT + plotH - y/ymax*plotH }
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>`,
			padL, padL+plotW, py(y), py(y), padL-6, py(y)+4, fmtNum(y))
	}
	for e := math.Ceil(lo); e <= hi; e++ {
		us := math.Pow(10, e)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="tick" text-anchor="middle">%s</text>`, px(us), padT+plotH+16, fmtUS(us))
	}
	prev := hs[0].UpTo / 1.19
	for _, h := range hs {
		x0, x1 := px(prev), px(h.UpTo)
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s to %s: %d calls</title></rect>`,
			x0, py(float64(h.Count)), math.Max(x1-x0-1, 1), py(0)-py(float64(h.Count)), fmtUS(prev), fmtUS(h.UpTo), h.Count)
		prev = h.UpTo
	}
	for i, m := range []struct {
		name string
		v    float64
	}{{"p50", l.P50}, {"p99", l.P99}, {"p99.9", l.P999}, {"max", l.Max}} {
		if m.v <= 0 {
			continue
		}
		x := math.Min(math.Max(px(m.v), padL), padL+plotW)
		tx, anchor := x+3, "start"
		if x > padL+plotW-50 {
			tx, anchor = x-3, "end"
		}
		fmt.Fprintf(&b, `<g class="marker"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d"/><text x="%.1f" y="%d" text-anchor="%s">%s</text><title>%s %s</title></g>`,
			x, x, padT, padT+plotH, tx, padT+12+i*13, anchor, m.name, m.name, fmtUS(m.v))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{"inc": func(i int) int { return i + 1 }}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>ratelimitd bench: {{.R.Params.Target}} {{printf "%.0f" .R.DecisionsPerSec}} decisions/s</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:880px;color:#1f2328;background:#fff}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}
.chart{width:100%;height:auto;border:1px solid #d0d7de;margin:8px 0}
.chart .title{font-size:13px;font-weight:600;fill:#1f2328}
.chart .tick,.chart .legend{font-size:11px;fill:#57606a}
.chart .grid{stroke:#eaeef2}
.chart .series{fill:none;stroke-width:2}
.chart .bar{fill:#1f6feb}
.chart .event line{stroke:#d1242f;stroke-dasharray:4 3}.chart .event text{font-size:11px;fill:#d1242f}
.chart .marker line{stroke:#8250df;stroke-dasharray:2 2}.chart .marker text{font-size:11px;fill:#8250df}
</style></head><body>
<h1>ratelimitd bench: {{.R.Params.Target}}</h1>
<p>Started {{.R.Start.Format "2006-01-02 15:04:05 MST"}} on {{.R.Machine.CPU}} ({{.R.Machine.Cores}} cores, GOMAXPROCS {{.R.Machine.GOMAXPROCS}}, {{.R.Machine.GoVersion}}).
{{if .R.Params.Command}}Command: <code>{{.R.Params.Command}}</code>{{end}}</p>
<h2>Summary</h2>
<pre id="summary">{{.Summary}}</pre>
<h2>Throughput</h2>
{{.Throughput}}
{{.Decisions}}
<h2>Latency</h2>
{{.Histogram}}
{{.Latency}}
{{if .R.Events}}<h2>Events</h2>
<table id="events"><tr><th>at (s)</th><th>event</th><th>node</th><th>detail</th><th>errors after</th><th>recovered after (s)</th></tr>
{{range .R.Events}}<tr><td>{{printf "%.2f" .At.D.Seconds}}</td><td>{{.Kind}}</td><td>{{.Node}}</td><td>{{.Detail}}</td><td>{{.ErrorsAfter}}</td><td>{{printf "%.1f" .RecoveredAfter.D.Seconds}}</td></tr>
{{end}}</table>{{end}}
{{with .R.Baseline}}<h2>Baseline</h2>
<p>{{.Nodes}} node(s) at {{printf "%.0f" .Rate}} checks/s against 1 node at the same load per node, rounds alternated; median ratio <b>{{printf "%.2f" .MedianRatio}}</b>.</p>
<table id="baseline"><tr><th>round</th><th>cluster µs per decision</th><th>1 node µs per decision</th><th>ratio</th><th>cluster decisions/s</th><th>1 node decisions/s</th></tr>
{{range $i, $r := .Rounds}}<tr><td>{{inc $i}}</td><td>{{printf "%.1f" $r.ClusterUS}}</td><td>{{printf "%.1f" $r.NodeUS}}</td><td>{{printf "%.2f" $r.Ratio}}</td><td>{{printf "%.0f" $r.ClusterDecisionsPerSec}}</td><td>{{printf "%.0f" $r.NodeDecisionsPerSec}}</td></tr>
{{end}}</table>{{end}}
<h2>Accuracy</h2>
<p>Mode <b>{{.R.Accuracy.Mode}}</b>: {{.R.Accuracy.Note}}.</p>
<table id="accuracy"><tr><th>keys</th><th>allowed hits</th><th>allowance</th><th>over-admitted hits</th><th>under-admitted checks</th><th>keys over</th><th>max over</th></tr>
<tr><td>{{.R.Accuracy.Keys}}</td><td>{{.R.Accuracy.AllowedHits}}</td><td>{{.R.Accuracy.Allowance}}</td><td>{{.R.Accuracy.OverAdmitted}}</td><td>{{.R.Accuracy.UnderAdmitted}}</td><td>{{.R.Accuracy.KeysOver}}</td><td>{{.R.Accuracy.MaxOver}}</td></tr></table>
{{if .R.Accuracy.Windows}}<table id="windows"><tr><th>window start</th><th>allowed</th><th>denied</th><th>over</th><th>under</th><th>ambiguous</th></tr>
{{range .R.Accuracy.Windows}}<tr><td>{{.Start.Format "15:04:05.000"}}</td><td>{{.Allowed}}</td><td>{{.Denied}}</td><td>{{.OverAdmitted}}</td><td>{{.UnderAdmitted}}</td><td>{{.Ambiguous}}</td></tr>
{{end}}</table>{{end}}
</body></html>
`))
