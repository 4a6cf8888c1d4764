package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sample() *Report {
	return &Report{
		Title: "zeroloss bench",
		Meta:  append(Machine(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), Pair{"fdatasync", "1.2ms"}),
		Tables: []Table{{
			Title:   "results",
			Columns: []string{"case", "producers", "msgs/s", "ratio"},
			Rows: [][]string{
				{"flush=sync", "1", "812", "0.97x"},
				{"flush=async", "16", "123456", "-"},
				{"<script>alert(1)</script>", "2", "3", "4x"},
			},
			Notes: []string{"ratio: queue msgs/s / raw msgs/s & more"},
		}},
		Charts: []BarChart{{
			Title: "throughput", Unit: "msgs/s",
			Bars: []Bar{
				{Label: "flush=sync p=1", Value: 812, Note: "0.97x raw"},
				{Label: "flush=async p=16", Value: 123456},
				{Label: `<script>alert("x")</script>`, Value: 0},
			},
		}},
	}
}

func TestWriteHTML(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, sample().WriteHTML(&b))
	html := b.String()
	assert.True(t, strings.HasPrefix(html, "<!DOCTYPE html>"))
	for _, want := range []string{
		"<title>zeroloss bench</title>", "<dt>fdatasync</dt><dd>1.2ms</dd>", "<dt>go</dt>",
		`<td>flush=sync</td><td class="num">1</td><td class="num">812</td><td class="num">0.97x</td>`,
		`<td>flush=async</td><td class="num">16</td><td class="num">123456</td><td class="num">-</td>`,
		"<svg ", "<rect ", ">flush=async p=16<", "123456 msgs/s", "0.97x raw",
		"ratio: queue msgs/s / raw msgs/s &amp; more",
	} {
		assert.Contains(t, html, want)
	}
	assert.Equal(t, 1, strings.Count(html, "<svg "))
	assert.Equal(t, 3, strings.Count(html, "<rect "))
	t.Run("escaping", func(t *testing.T) {
		assert.NotContains(t, html, "<script")
		assert.Contains(t, html, "&lt;script&gt;alert(1)&lt;/script&gt;")
		assert.Contains(t, html, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;")
	})
	t.Run("self-contained", func(t *testing.T) {
		for _, external := range []string{"http://", "https://", "src=", "<link", "<script", "@import"} {
			if external == "http://" {
				// the SVG namespace is a name, not a resource
				assert.Equal(t, 1, strings.Count(html, external))
				continue
			}
			assert.NotContains(t, html, external)
		}
	})
	t.Run("svg is well-formed XML", func(t *testing.T) {
		start := strings.Index(html, "<svg ")
		end := strings.Index(html, "</svg>") + len("</svg>")
		require.True(t, start >= 0 && end > start)
		dec := xml.NewDecoder(strings.NewReader(html[start:end]))
		for {
			_, err := dec.Token()
			if err != nil {
				require.ErrorContains(t, err, "EOF")
				break
			}
		}
	})
}

func TestBarWidths(t *testing.T) {
	c := layout(&BarChart{Bars: []Bar{{Label: "a", Value: 10}, {Label: "b", Value: 5}, {Label: "c", Value: 0}, {Label: "d", Value: -1}}})
	require.Len(t, c.Bars, 4)
	assert.InDelta(t, c.Bars[0].Width/2, c.Bars[1].Width, 1e-9, "widths are proportional")
	assert.Zero(t, c.Bars[2].Width)
	assert.Zero(t, c.Bars[3].Width)
	assert.LessOrEqual(t, c.Bars[0].X+c.Bars[0].Width, float64(chartWidth))
	assert.Greater(t, c.Bars[1].Y, c.Bars[0].Y)
	assert.GreaterOrEqual(t, c.Height, c.Bars[3].Y+barHeight)
}

func TestJSONRoundTrip(t *testing.T) {
	want := sample()
	var b bytes.Buffer
	require.NoError(t, want.WriteJSON(&b))
	var got Report
	require.NoError(t, json.Unmarshal(b.Bytes(), &got))
	assert.Equal(t, want, &got)
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, sample().WriteText(&b))
	want := `zeroloss bench
  date:      2026-01-02T03:04:05Z
`
	assert.True(t, strings.HasPrefix(b.String(), want), b.String())
	assert.Contains(t, b.String(), "  fdatasync: 1.2ms\n")
	assert.Contains(t, b.String(), `
results
case                       producers  msgs/s  ratio
flush=sync                         1     812  0.97x
flush=async                       16  123456      -
<script>alert(1)</script>          2       3     4x

ratio: queue msgs/s / raw msgs/s & more
`)
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 123456.7: "123457", 45.61: "45.6", 0.1234: "0.123", 0.000123: "0.000123", 37: "37", -2: "-2"} {
		assert.Equal(t, want, formatValue(v), "%v", v)
	}
}

func TestIsTerminal(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	defer file.Close()
	reader, writer, err := os.Pipe()
	require.NoError(t, err)
	defer reader.Close()
	defer writer.Close()
	assert.False(t, IsTerminal(file), "a regular file")
	assert.False(t, IsTerminal(writer), "a pipe")
	assert.False(t, IsTerminal(&bytes.Buffer{}), "not an *os.File")
	if runtime.GOOS != "windows" {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		require.NoError(t, err)
		defer null.Close()
		assert.True(t, IsTerminal(null), "a character device, as a terminal is")
	}
}
