"""The text and HTML of `model.summary()`: pure functions over rows of strings and counts.

The text follows Keras 2's table (column positions, wrapping of long cells,
a blank line after each layer) with Keras 3's byte units (`80.00 B`).
"""

import html

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def readable_size(nbytes):
    """`nbytes` in binary units with two decimals.

    Example:
        >>> readable_size(80), readable_size(3 * 1024 * 1024)
        ('80.00 B', '3.00 MB')
    """
    size = float(nbytes)
    for unit in _UNITS[:-1]:
        if size < 1024:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} {_UNITS[-1]}"


def _print_row(fields, positions):
    # Keras 2's layout: each cell is cut to its column (less two spaces), at a
    # "),"-like boundary when there is one, and the rest wraps to more lines.
    left = [str(x) for x in fields]
    lines = []
    while any(left):
        line = ""
        for col in range(len(left)):
            start = positions[col - 1] if col > 0 else 0
            end = positions[col]
            last = col == len(positions) - 1
            space = 0 if last else 2
            cutoff = end - start - space - (0 if last else 1)
            fit = left[col][:cutoff]
            breaks = [fit.find(x) + len(x) for x in ("),", "},", "],", "',") if fit.find(x) >= 0]
            if breaks:
                cutoff = min(breaks)
                fit = fit[:cutoff]
            if col == 0:
                line += " "
            line += fit + " " * space
            left[col] = left[col][cutoff:]
            line += " " * (positions[col] - len(line))
        lines.append(line.rstrip())
    return lines


def format_table(title, rows, totals, connections=False, line_length=None, positions=None):
    """The summary table as text.

    Example:
        >>> print(format_table("tiny", [("dense (Dense)", "(None, 2)", 8, None)], (8, 32, 0, 0)))
        Model: "tiny"
        _________________________________________________________________
         Layer (type)                Output Shape              Param #
        =================================================================
         dense (Dense)               (None, 2)                 8
        <BLANKLINE>
        =================================================================
        Total params: 8 (32.00 B)
        Trainable params: 8 (32.00 B)
        Non-trainable params: 0 (0.00 B)
        _________________________________________________________________

    Args:
        title: the model's name.
        rows: `(label, output_shape_text, param_count, connected_to)` per layer;
            `connected_to` is a list of `"layer[node][tensor]"` strings (or None).
        totals: `(trainable_count, trainable_bytes, non_trainable_count, non_trainable_bytes)`.
        connections: add Keras' "Connected to" column (graphs that are not a chain).
        line_length: total width (65, or 98 with connections).
        positions: column ends, as fractions of the width or as absolute columns.
    """
    if connections:
        line_length = line_length or 98
        positions = positions or (0.33, 0.55, 0.67, 1.0)
        header = ("Layer (type)", "Output Shape", "Param #", "Connected to")
    else:
        line_length = line_length or 65
        positions = positions or (0.45, 0.85, 1.0)
        header = ("Layer (type)", "Output Shape", "Param #")
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    lines = [f'Model: "{title}"', "_" * line_length]
    lines += _print_row(header, positions)
    lines.append("=" * line_length)
    for label, shape, params, connected in rows:
        fields = [label, shape, _count(params)]
        if connections:
            fields.append(list(connected or []))
        lines += _print_row(fields, positions)
        lines.append("")
    lines.append("=" * line_length)
    lines += _total_lines(totals)
    lines.append("_" * line_length)
    return "\n".join(lines)


def _count(params):
    # Keras 3 groups thousands: "13,610".
    return f"{params:,}" if isinstance(params, int) else str(params)


def _total_lines(totals):
    trainable, trainable_bytes, frozen, frozen_bytes = totals
    return [
        f"Total params: {trainable + frozen:,} ({readable_size(trainable_bytes + frozen_bytes)})",
        f"Trainable params: {trainable:,} ({readable_size(trainable_bytes)})",
        f"Non-trainable params: {frozen:,} ({readable_size(frozen_bytes)})",
    ]


def format_html(title, rows, totals, connections=False):
    """The same table as an HTML fragment, for notebooks (`_repr_html_`).

    Example:
        >>> html = format_html("m", [("dense (Dense)", "(None, 2)", 8, None)], (8, 32, 0, 0))
        >>> ">dense (Dense)</td>" in html, "Total params: 8 (32.00 B)" in html
        (True, True)
    """
    esc = html.escape
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connections else [])
    out = [
        '<div class="jmod-summary">',
        f"<p><b>Model: &quot;{esc(title)}&quot;</b></p>",
        '<table style="border-collapse: collapse; text-align: left">',
        "<thead><tr>"
        + "".join(f'<th style="padding: 2px 12px">{esc(h)}</th>' for h in header)
        + "</tr></thead>",
        "<tbody>",
    ]
    for label, shape, params, connected in rows:
        cells = [label, shape, _count(params)]
        if connections:
            cells.append("<br>".join(esc(c) for c in connected or []))
            cells = [esc(c) for c in cells[:3]] + [cells[3]]
        else:
            cells = [esc(c) for c in cells]
        out.append(
            "<tr>" + "".join(f'<td style="padding: 2px 12px">{c}</td>' for c in cells) + "</tr>"
        )
    out.append("</tbody></table>")
    out.append("<p>" + "<br>".join(esc(line) for line in _total_lines(totals)) + "</p>")
    out.append("</div>")
    return "\n".join(out)
