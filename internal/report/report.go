// Package report writes the results of the command-line tool's measurements
// (zeroloss lab, zeroloss bench) in three forms from one description: aligned
// text for a terminal, JSON for programs, and a self-contained HTML page
// (inline CSS and SVG bar charts, no scripts, no external resources) to keep
// or share.
//
// A Report knows nothing of what was measured: its cells are strings and its
// bars numbers. The commands build one from their own results.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Pair is one line of a report's header, such as {"machine", "linux/amd64"}.
type Pair struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Table is a table of text cells. Every row should have len(Columns) cells.
// A column whose cells all start with a number is right-aligned in text.
type Table struct {
	Title   string     `json:"title,omitempty"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
	// Notes are lines printed under the table: a legend.
	Notes []string `json:"notes,omitempty"`
}

// Bar is one bar of a BarChart.
type Bar struct {
	Label string  `json:"label"`
	Value float64 `json:"value"`
	// Note, if set, is shown after the value (such as "0.93x raw").
	Note string `json:"note,omitempty"`
}

// BarChart is a horizontal bar chart, one bar per label, all in one unit.
// Bars are drawn from zero; negative values are drawn as zero.
type BarChart struct {
	Title string `json:"title"`
	Unit  string `json:"unit"`
	Bars  []Bar  `json:"bars"`
}

// Report is one measurement's results: a title, header lines, tables and
// charts, in that order.
type Report struct {
	Title  string     `json:"title"`
	Meta   []Pair     `json:"meta"`
	Tables []Table    `json:"tables"`
	Charts []BarChart `json:"charts,omitempty"`
	// Data, if set, is written as is by WriteJSON, next to the tables: the
	// command's own typed results, for programs. WriteText and WriteHTML
	// ignore it.
	Data any `json:"data,omitempty"`
}

// IsTerminal reports whether w is a terminal: an *os.File on a character
// device (on Linux, macOS and Windows alike). A pipe, a regular file or any
// other io.Writer is not: progress rewritten in place with a carriage return
// would be noise there.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// Machine returns header lines describing this run: the date, the machine
// (GOOS/GOARCH and CPU count) and the Go version. now is the date shown.
func Machine(now time.Time) []Pair {
	host, _ := os.Hostname()
	machine := fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if host != "" {
		machine += ", host " + host
	}
	return []Pair{
		{"date", now.Format(time.RFC3339)},
		{"machine", machine},
		{"go", runtime.Version()},
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as plain text: the title, the header lines,
// then each table with aligned columns (numbers to the right) and its notes.
// Charts are left out: the tables hold their figures.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	if r.Title != "" {
		b.WriteString(r.Title + "\n")
	}
	keyWidth := 0
	for _, p := range r.Meta {
		keyWidth = max(keyWidth, utf8.RuneCountInString(p.Key))
	}
	for _, p := range r.Meta {
		fmt.Fprintf(&b, "  %s:%s %s\n", p.Key, strings.Repeat(" ", keyWidth-utf8.RuneCountInString(p.Key)), p.Value)
	}
	for i := range r.Tables {
		b.WriteString("\n")
		r.Tables[i].writeText(&b)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (t *Table) writeText(b *strings.Builder) {
	if t.Title != "" {
		b.WriteString(t.Title + "\n")
	}
	widths := make([]int, len(t.Columns))
	for c, h := range t.Columns {
		widths[c] = utf8.RuneCountInString(h)
	}
	for _, row := range t.Rows {
		for c, cell := range row {
			if c < len(widths) {
				widths[c] = max(widths[c], utf8.RuneCountInString(cell))
			}
		}
	}
	right := t.numericColumns()
	writeRow := func(cells []string) {
		var line strings.Builder
		for c := range t.Columns {
			cell := ""
			if c < len(cells) {
				cell = cells[c]
			}
			pad := strings.Repeat(" ", widths[c]-utf8.RuneCountInString(cell))
			if c > 0 {
				line.WriteString("  ")
			}
			if right[c] {
				line.WriteString(pad + cell)
			} else {
				line.WriteString(cell + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	writeRow(t.Columns)
	for _, row := range t.Rows {
		writeRow(row)
	}
	if len(t.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range t.Notes {
			b.WriteString(n + "\n")
		}
	}
}

// numericColumns reports, per column, whether every non-empty cell other
// than "-" starts with a number (and at least one does).
func (t *Table) numericColumns() []bool {
	right := make([]bool, len(t.Columns))
	for c := range t.Columns {
		numbers, others := 0, 0
		for _, row := range t.Rows {
			if c >= len(row) || row[c] == "" || row[c] == "-" {
				continue
			}
			if startsWithNumber(row[c]) {
				numbers++
			} else {
				others++
			}
		}
		right[c] = numbers > 0 && others == 0
	}
	return right
}

func startsWithNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsDigit(r)
}
