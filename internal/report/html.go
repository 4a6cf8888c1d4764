package report

import (
	"html/template"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// Chart geometry, in SVG user units (pixels at 100% zoom).
const (
	chartWidth = 760
	barHeight  = 18
	barGap     = 8
	charWidth  = 7.2 // rough width of one character of the 12px labels
	valueSpace = 230 // room right of the longest bar for its value and note
)

// svgChart is a BarChart laid out for the template.
type svgChart struct {
	Title, Unit   string
	Width, Height int
	LabelX        float64 // right edge of the labels
	Bars          []svgBar
}

type svgBar struct {
	Label, Value, Note string
	Y, TextY           int
	X, Width, ValueX   float64
}

func layout(c *BarChart) svgChart {
	labelChars := 0
	peak := 0.0
	for _, b := range c.Bars {
		labelChars = max(labelChars, utf8.RuneCountInString(b.Label))
		peak = max(peak, b.Value)
	}
	labelWidth := math.Min(float64(labelChars)*charWidth, chartWidth/2)
	x := labelWidth + 8
	span := chartWidth - x - valueSpace
	s := svgChart{Title: c.Title, Unit: c.Unit, Width: chartWidth, LabelX: tenth(labelWidth)}
	for i, b := range c.Bars {
		w := 0.0
		if peak > 0 && b.Value > 0 && !math.IsInf(b.Value, 0) {
			w = math.Max(b.Value/peak*span, 1)
		}
		y := barGap + i*(barHeight+barGap)
		s.Bars = append(s.Bars, svgBar{
			Label: b.Label, Value: formatValue(b.Value) + " " + c.Unit, Note: b.Note,
			Y: y, TextY: y + barHeight - 5, X: tenth(x), Width: tenth(w), ValueX: tenth(x + w + 6),
		})
	}
	s.Height = barGap + len(c.Bars)*(barHeight+barGap)
	return s
}

// tenth rounds a coordinate to a tenth of a pixel.
func tenth(x float64) float64 { return math.Round(x*10) / 10 }

// formatValue prints v with three significant digits, without exponent for
// everyday magnitudes: 12300, 45.6, 0.123; and whole numbers whole: 37.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// WriteHTML writes the report as one self-contained HTML page: inline CSS,
// tables, and each chart as inline SVG. It needs no script and loads
// nothing. Every text of the report is escaped.
func (r *Report) WriteHTML(w io.Writer) error {
	charts := make([]svgChart, len(r.Charts))
	for i := range r.Charts {
		charts[i] = layout(&r.Charts[i])
	}
	tables := make([]htmlTable, len(r.Tables))
	for i := range r.Tables {
		t := &r.Tables[i]
		tables[i] = htmlTable{Table: t, Right: t.numericColumns()}
	}
	return page.Execute(w, struct {
		*Report
		HTMLTables []htmlTable
		SVGCharts  []svgChart
	}{r, tables, charts})
}

type htmlTable struct {
	*Table
	Right []bool
}

// Cell returns cell c of row, or "" for a short row.
func (t htmlTable) Cell(row []string, c int) string {
	if c < len(row) {
		return row[c]
	}
	return ""
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a; margin: 2em auto; max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .3em; }
h2 { font-size: 1.15em; margin-top: 1.8em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; margin: 0 0 1em; }
dl.meta dt { color: #5b6670; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .3em .7em; border-bottom: 1px solid #dde2e6; text-align: left; white-space: nowrap; }
th { background: #f2f4f6; font-weight: 600; }
td.num, th.num { text-align: right; }
tbody tr:hover { background: #f8fafb; }
.notes { color: #5b6670; font-size: .9em; }
.notes p { margin: .2em 0; }
.scroll { overflow-x: auto; }
svg { display: block; max-width: 100%; height: auto; font: 12px system-ui, sans-serif; }
svg .bar { fill: #3a78b5; }
svg .label { fill: #1d232a; }
svg .value { fill: #1d232a; }
svg .note { fill: #5b6670; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{- if .Meta}}
<dl class="meta">
{{- range .Meta}}
<dt>{{.Key}}</dt><dd>{{.Value}}</dd>
{{- end}}
</dl>
{{- end}}
{{- range .HTMLTables}}
{{- $t := .}}
{{- if .Title}}
<h2>{{.Title}}</h2>
{{- end}}
<div class="scroll">
<table>
<thead><tr>{{range $c, $name := .Columns}}<th{{if index $t.Right $c}} class="num"{{end}}>{{$name}}</th>{{end}}</tr></thead>
<tbody>
{{- range $row := .Rows}}
<tr>{{range $c, $name := $t.Columns}}<td{{if index $t.Right $c}} class="num"{{end}}>{{$t.Cell $row $c}}</td>{{end}}</tr>
{{- end}}
</tbody>
</table>
</div>
{{- if .Notes}}
<div class="notes">
{{- range .Notes}}
<p>{{.}}</p>
{{- end}}
</div>
{{- end}}
{{- end}}
{{- range .SVGCharts}}
{{- $c := .}}
<h2>{{.Title}}</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="{{.Title}}">
{{- range .Bars}}
<g>
<title>{{.Label}}: {{.Value}}{{if .Note}} ({{.Note}}){{end}}</title>
<text class="label" x="{{$c.LabelX}}" y="{{.TextY}}" text-anchor="end">{{.Label}}</text>
<rect class="bar" x="{{.X}}" y="{{.Y}}" width="{{.Width}}" height="` + strconv.Itoa(barHeight) + `"></rect>
<text class="value" x="{{.ValueX}}" y="{{.TextY}}">{{.Value}}{{if .Note}}<tspan class="note"> {{.Note}}</tspan>{{end}}</text>
</g>
{{- end}}
</svg>
{{- end}}
</body>
</html>
`))
