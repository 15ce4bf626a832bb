package run

import (
	"image/color"
	"math"
	"os"
	"time"

	"github.com/duro-io/duro/jepsen/checker"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// shade draws the fault windows as grey bands behind the data.
type shade struct{ faults []Fault }

func (s shade) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for _, f := range s.faults {
		end := f.End
		if end == 0 {
			end = f.Start
		}
		x0 := trX(math.Max(f.Start.Seconds(), p.X.Min))
		x1 := trX(math.Min(end.Seconds(), p.X.Max))
		if x1 <= x0 {
			continue
		}
		c.FillPolygon(color.NRGBA{R: 255, G: 120, B: 0, A: 50}, []vg.Point{
			{X: x0, Y: c.Min.Y}, {X: x1, Y: c.Min.Y}, {X: x1, Y: c.Max.Y}, {X: x0, Y: c.Max.Y}})
	}
}

var typeColors = map[checker.Type]color.Color{
	checker.Ok:   color.NRGBA{R: 30, G: 140, B: 60, A: 255},
	checker.Fail: color.NRGBA{R: 200, G: 30, B: 30, A: 255},
	checker.Info: color.NRGBA{R: 230, G: 160, B: 0, A: 255},
}

// plotRun writes a PNG with two panels sharing the time axis: the latency of
// every call (log scale, coloured by outcome) and throughput per second by
// outcome; fault windows are shaded in both.
func plotRun(path, title string, h []Rec, faults []Fault) error {
	var tmax float64
	for _, r := range h {
		tmax = math.Max(tmax, r.End.Seconds())
	}
	lat := plot.New()
	lat.Title.Text = title + ": latency (shaded: faults)"
	lat.Y.Label.Text = "latency (ms)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	lat.Add(shade{faults})
	tput := plot.New()
	tput.Title.Text = "throughput"
	tput.X.Label.Text = "time (s)"
	tput.Y.Label.Text = "calls/s completed"
	tput.Add(shade{faults})
	buckets := int(tmax) + 1
	for _, t := range []checker.Type{checker.Ok, checker.Fail, checker.Info} {
		var pts plotter.XYs
		counts := make([]float64, buckets)
		for _, r := range h {
			if r.Type != t || r.Final {
				continue
			}
			ms := math.Max(float64(r.End-r.Start)/float64(time.Millisecond), 0.1)
			pts = append(pts, plotter.XY{X: r.End.Seconds(), Y: ms})
			counts[int(r.End.Seconds())]++
		}
		if len(pts) > 0 {
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return err
			}
			sc.GlyphStyle.Color = typeColors[t]
			sc.GlyphStyle.Radius = vg.Points(1.2)
			sc.GlyphStyle.Shape = draw.CircleGlyph{}
			lat.Add(sc)
			lat.Legend.Add(t.String(), sc)
		}
		var line plotter.XYs
		for i, n := range counts {
			line = append(line, plotter.XY{X: float64(i) + 0.5, Y: n})
		}
		l, err := plotter.NewLine(line)
		if err != nil {
			return err
		}
		l.Color = typeColors[t]
		l.Width = vg.Points(1.2)
		tput.Add(l)
		tput.Legend.Add(t.String(), l)
	}
	lat.Legend.Top = true
	tput.Legend.Top = true
	lat.X.Min, lat.X.Max = 0, tmax
	tput.X.Min, tput.X.Max = 0, tmax
	if lat.Y.Min <= 0 {
		lat.Y.Min = 0.1
	}

	img := vgimg.New(vg.Points(1000), vg.Points(700))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Points(10), PadY: vg.Points(10), PadTop: vg.Points(5), PadBottom: vg.Points(5), PadLeft: vg.Points(5), PadRight: vg.Points(10)}
	plots := [][]*plot.Plot{{lat}, {tput}}
	canvases := plot.Align(plots, tiles, dc)
	lat.Draw(canvases[0][0])
	tput.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
