package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"}

func svgOpen(b *strings.Builder, w, h int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", 10, esc(title))
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// waterfall: one bar per configuration, its stages stacked in order.
func waterfall(s Startup) string {
	var b strings.Builder
	w, left, top, bar := 900, 140, 40, 34
	h := top + len(Configs)*(bar+14) + 110
	svgOpen(&b, w, h, "Start (or wake) → first result, by stage: "+s.Model)
	var maxMs float64
	for _, c := range Configs {
		var sum float64
		for _, st := range s.Stages[c] {
			sum += st.Ms
		}
		maxMs = math.Max(maxMs, sum)
	}
	scale := float64(w-left-110) / math.Max(maxMs, 1e-3)
	colors := map[string]string{}
	for i, c := range Configs {
		y := top + i*(bar+14)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+bar/2+4, esc(c))
		x := float64(left)
		for _, st := range s.Stages[c] {
			col, ok := colors[st.Name]
			if !ok {
				col = palette[len(colors)%len(palette)]
				colors[st.Name] = col
			}
			wd := st.Ms * scale
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s %.2f ms</title></rect>`+"\n", x, y, math.Max(wd, 0.5), bar, col, esc(st.Name), st.Ms)
			x += wd
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.1f ms</text>`+"\n", x+4, y+bar/2+4, (x-float64(left))/scale)
	}
	ly := top + len(Configs)*(bar+14) + 10
	i := 0
	for _, c := range Configs {
		for _, st := range s.Stages[c] {
			if colors[st.Name] == "" {
				continue
			}
			col := colors[st.Name]
			colors[st.Name] = ""
			x, y := 10+(i%3)*290, ly+(i/3)*18
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", x, y, col, x+16, y+10, esc(st.Name))
			i++
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// plot draws lines on a log-x (and optionally log-y) plot.
type series struct {
	name string
	x, y []float64
}

func plot(title, xlabel, ylabel string, logY bool, ss []series) string {
	var b strings.Builder
	w, h, l, r, t, bt := 760, 440, 70, 30, 40, 60
	svgOpen(&b, w, h, title)
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for i := range s.x {
			minX, maxX = math.Min(minX, s.x[i]), math.Max(maxX, s.x[i])
			minY, maxY = math.Min(minY, s.y[i]), math.Max(maxY, s.y[i])
		}
	}
	if logY {
		minY = math.Max(minY, 1e-3)
	} else {
		minY = 0
	}
	lx := func(v float64) float64 { return math.Log10(math.Max(v, 1e-6)) }
	ly := func(v float64) float64 {
		if logY {
			return math.Log10(math.Max(v, 1e-6))
		}
		return v
	}
	x0, x1, y0, y1 := lx(minX), lx(maxX), ly(minY), ly(maxY)
	if x1 == x0 {
		x1 = x0 + 1
	}
	if y1 == y0 {
		y1 = y0 + 1
	}
	px := func(v float64) float64 { return float64(l) + (lx(v)-x0)/(x1-x0)*float64(w-l-r) }
	py := func(v float64) float64 { return float64(h-bt) - (ly(v)-y0)/(y1-y0)*float64(h-t-bt) }
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", l, h-bt, w-r, h-bt, l, t, l, h-bt)
	for e := math.Floor(x0); e <= math.Ceil(x1); e++ {
		v := math.Pow(10, e)
		if lx(v) < x0-1e-9 || lx(v) > x1+1e-9 {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(v), t, px(v), h-bt, px(v), h-bt+16, f2(v))
	}
	for i := 0; i <= 4; i++ {
		yv := y0 + (y1-y0)*float64(i)/4
		v := yv
		if logY {
			v = math.Pow(10, yv)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", l-6, py(v)+4, f2(v))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (l+w-r)/2, h-18, esc(xlabel))
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>`+"\n", (t+h-bt)/2, (t+h-bt)/2, esc(ylabel))
	for i, s := range ss {
		var pts []string
		for j := range s.x {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.x[j]), py(s.y[j])))
		}
		col := palette[i%len(palette)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", l+10, t+6+i*18, col, l+26, t+16+i*18, esc(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func cdf(s Serving) string {
	var ss []series
	for _, c := range []string{Naive, Prewarmed} {
		v := slices.Clone(s.Samples[c])
		slices.Sort(v)
		var xs, ys []float64
		for i, x := range v {
			xs, ys = append(xs, x), append(ys, float64(i+1)/float64(len(v)))
		}
		ss = append(ss, series{name: c, x: xs, y: ys})
	}
	return plot("Request latency, bursty trace over four models (CDF)", "latency, ms (log)", "fraction of requests", false, ss)
}

func scalingChart(s Scaling) string {
	m, h := series{name: "mapped (agent)"}, series{name: "read into heap (naive)"}
	for _, p := range s.Points {
		m.x, m.y = append(m.x, p.SizeMiB), append(m.y, p.MappedMs.Median)
		h.x, h.y = append(h.x, p.SizeMiB), append(h.y, p.HeapMs.Median)
	}
	return plot("Model load time vs model size", "model size, MiB (log)", "load time, ms (log)", true, []series{m, h})
}
