"""The labelled search set of ``bench/search_set.py``, and the file builders both document benchmarks use.

Six short documents on unrelated topics, written for this benchmark (no outside text), turned into the
formats the pipeline reads: two multi-page text-layer PDFs, one PDF whose second page is a scan (read by
OCR), a DOCX with a table, a plain text file and a Markdown file. Then questions phrased the way a user
would ask them, not copied from the text: synonyms ("lorries" for "heavy goods vehicles", "parachuting"
for "skydiving"), reordered clauses, units changed (a kilo, not five hundred grams), some naming a rare
term or code (E17, VK-3381, TP-GOLD, FR-2, Sterna paradisaea), some vague ("how old can they get").

Each question is labelled with the document, the page (None for formats without pages) and a fragment
of the sentence that answers it; a result is right when it is a chunk of that document, on that page,
containing that fragment (compared lower-case, whitespace collapsed). The labels were written from the
text before any search ran, and have not been changed to suit a result.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # from scripts/ensure-tesseract.sh, as the tests use


@dataclass(frozen=True)
class Document:
    document_id: str
    filename: str
    kind: str  # "pdf" (pages of paragraphs; a page given as SCAN lines is rendered as an image), "docx", "text"
    pages: list[list[str]]  # pdf: one list of paragraphs per page; docx/text: one list of blocks
    table: list[list[str]] | None = None  # docx only: rows of cells, after the paragraphs
    scanned_pages: frozenset[int] = frozenset()  # pdf page numbers (from 1) whose lines are rendered as a scan


@dataclass(frozen=True)
class Question:
    text: str
    document_id: str
    page: int | None
    answer: str  # a fragment of the answering sentence, as the document spells it
    kind: str  # "paraphrase", "rare term" (the question names a code, a number or a rare name), "vague"


GREENHOUSE = Document("greenhouse-gc200", "gc200-manual.pdf", "pdf", [
    [
        "The Verdant GC-200 is a twelve-zone irrigation controller designed for commercial greenhouses and "
        "polytunnels. It drives solenoid valves at 24 volts AC and reads up to four soil moisture probes "
        "through its sensor terminals.",
        "Mount the controller on a vertical surface indoors or inside a weatherproof cabinet, at least one "
        "metre above the floor so that splashing water cannot reach the terminals. Leave twenty centimetres "
        "of free space below the housing for the cable glands.",
        "Connect the common wire of every valve to the terminal marked COM and each zone wire to its numbered "
        "terminal. The transformer must be plugged in last, after all low-voltage wiring has been checked.",
    ],
    [
        "Each zone can hold up to six start times per day. A start time waters the zone for its run time, from "
        "one minute to four hours, and the zones of one program always run one after another, never together, "
        "so that water pressure stays stable.",
        "When a moisture probe reports that the soil is already wet above the threshold you set, the controller "
        "skips the scheduled watering for that zone and records the skip in its log. The threshold is set as a "
        "percentage of volumetric water content, twenty-eight percent by default.",
        "Seasonal adjust scales every run time at once: setting it to seventy percent in autumn shortens a "
        "ten-minute watering to seven minutes without editing each program.",
    ],
    [
        "Error E17 means the flow sensor measured less than two litres per minute while a valve was open: check "
        "that the main supply tap is fully open and that the inlet filter is not clogged with algae.",
        "Error E22 appears when a zone draws more than 0.8 amperes, which usually points to a short circuit in "
        "the solenoid coil or water inside a wire connector. Replace the solenoid with valve kit VK-3381, which "
        "includes the coil, diaphragm and two waterproof connectors.",
        "If the display stays blank after a power cut, hold the RESET button for ten seconds. The programs are "
        "stored in flash memory and survive the reset; only the clock has to be set again.",
    ],
])

BRIDGE = Document("kellan-bridge", "kellan-bridge-history.pdf", "pdf", [
    [
        "The Kellan Bridge crosses the river Dornoch at the market town of Ashby Vale. It was designed by the "
        "engineer Matthew Corran and opened to traffic in the spring of 1783, replacing a ferry that had carried "
        "carts across the water for more than two centuries.",
        "The bridge was built of pink sandstone quarried four miles upstream and brought down on flat-bottomed "
        "barges. It has seven arches, and the widest, in the middle, spans almost thirty metres over the "
        "navigation channel.",
        "Tolls paid for its construction: a horse and rider paid one penny, a loaded wagon sixpence, and "
        "townspeople on foot crossed free. The toll house still stands at the northern end and is now a small "
        "museum.",
    ],
    [
        "In the great flood of November 1846 the river rose nine metres in two days and swept away the two "
        "southern arches. For eleven years a temporary timber deck carried traffic over the gap until cast-iron "
        "spans replaced the lost stonework in 1857.",
        "By the twentieth century the narrow roadway could no longer cope with motor traffic. Heavy goods "
        "vehicles were banned from the bridge in 1962, and a concrete road bridge was opened a kilometre "
        "downstream in 1971.",
        "Since 1988 the Kellan Bridge has carried only pedestrians and cyclists. It is a listed monument, and a "
        "conservation survey every ten years checks the mortar joints and the scour around the piers.",
    ],
])

KIMCHI = Document("kimchi", "kimchi.txt", "text", [[
    "Making napa cabbage kimchi at home",
    "Cut a large napa cabbage into quarters lengthwise and rub coarse sea salt between the leaves, roughly one "
    "tablespoon of salt for every five hundred grams of cabbage. Leave it for two hours, turning the quarters "
    "every thirty minutes, until the thick white ribs bend without snapping.",
    "Rinse the cabbage three times in cold water to wash off the excess salt, then let it drain in a colander "
    "for at least twenty minutes. Skipping the rinse makes the finished kimchi far too salty to eat.",
    "For the seasoning paste, blend garlic, ginger, fish sauce and a spoonful of sugar, then stir in Korean red "
    "pepper flakes called gochugaru. A thin porridge of glutinous rice flour cooked in water helps the paste "
    "cling to the leaves.",
    "Pack the coated cabbage tightly into a clean jar, pressing out air pockets, and leave about five "
    "centimetres of space at the top for the brine that rises. Let it ferment at room temperature for one to "
    "two days, then move it to the refrigerator, where it keeps souring slowly for weeks.",
    "Bubbles and a sour smell are signs of healthy fermentation. White film on the surface is usually harmless "
    "yeast that can be skimmed off, but fuzzy mould in pink or black means the batch must be thrown away.",
]])

INSURANCE = Document("wanderly-insurance", "wanderly-cover.docx", "docx", [[
    "Wanderly travel insurance: summary of cover",
    "This summary explains what the Wanderly policy pays for and what it leaves out. The full terms are in the "
    "policy wording, which prevails if the two disagree.",
    "If your checked luggage is lost or delayed by more than twelve hours, we refund essential purchases such "
    "as clothing and toiletries up to 300 euros. Keep the airline's property irregularity report, because "
    "claims without it are declined.",
    "Emergency medical treatment abroad is covered, including repatriation by air ambulance when a doctor we "
    "appoint decides it is medically necessary.",
    "Hazardous pastimes are excluded unless you buy the adventure add-on: skydiving, bungee jumping, cave "
    "diving and mountaineering above 4,000 metres are not covered by the standard policy.",
    "Report a claim within 28 days of returning home through the online portal, attaching receipts and "
    "medical reports.",
]], table=[
    ["Plan", "Code", "Medical cover", "Cancellation cover"],
    ["Basic", "TP-BASE", "1 million euros", "1,500 euros"],
    ["Gold", "TP-GOLD", "10 million euros", "7,500 euros"],
])

TERN = Document("arctic-tern", "arctic-tern.md", "text", [[
    "# The Arctic tern",
    "The Arctic tern (Sterna paradisaea) makes the longest migration of any animal known. Birds that nest in "
    "Greenland and Iceland fly to the Weddell Sea off Antarctica and back each year, a round trip that tracking "
    "devices have measured at about 70,000 kilometres.",
    "Because it follows the summer from one pole to the other, the tern sees more daylight than any other "
    "creature on Earth. Over a life that can last more than thirty years, one bird may travel a distance equal "
    "to three return journeys to the Moon.",
    "Terns feed on small fish such as sand eels and on krill, which they catch by hovering over the water and "
    "plunging in head first. They rarely swim and spend most of their lives on the wing.",
    "They breed in noisy colonies on shingle beaches and tundra, laying one to three speckled eggs in a shallow "
    "scrape on the ground. Parents defend the nest fiercely, diving at foxes, dogs and people and striking them "
    "on the head with their sharp bills.",
]])

LAB = Document("lab-nitrogen", "cryogen-safety.pdf", "pdf", [
    [
        "Liquid nitrogen boils at minus 196 degrees Celsius. Brief contact with the skin can cause "
        "frostbite-like burns, and splashes into the eyes can cause permanent damage, so a face shield and "
        "loose-fitting cryogenic gloves must be worn whenever it is poured.",
        "One litre of liquid nitrogen expands into about 700 litres of gas. In a closed room this gas displaces "
        "the air, and a person can lose consciousness without any warning smell, because nitrogen is colourless "
        "and odourless.",
        "The cold store therefore has an oxygen monitor that sounds an alarm when the oxygen level falls below "
        "19.5 percent. Never transport a dewar in a passenger lift together with people; send it alone and "
        "collect it on the arrival floor.",
    ],
    [  # page 2 is a scan: these lines become pixels, and OCR reads them back
        "Freezer room FR-2: emergency steps",
        "If the oxygen alarm sounds, leave the",
        "room at once and close the door behind",
        "you. Do not go back in to help a",
        "colleague who has collapsed; call the",
        "site emergency number 4455 and wait",
        "for responders with breathing sets.",
        "Spills larger than five litres must be",
        "reported to the safety officer.",
    ],
], scanned_pages=frozenset({2}))

DOCUMENTS = [GREENHOUSE, BRIDGE, KIMCHI, INSURANCE, TERN, LAB]

_P, _R, _V = "paraphrase", "rare term", "vague"
QUESTIONS = [
    # the irrigation controller manual (PDF, 3 pages)
    Question("How high off the ground should the watering controller be installed?", "greenhouse-gc200", 1,
             "at least one metre above the floor", _P),
    Question("What does fault code E17 mean?", "greenhouse-gc200", 3, "Error E17 means the flow sensor", _R),
    Question("Which spare part fixes a shorted valve coil?", "greenhouse-gc200", 3, "valve kit VK-3381", _P),
    Question("What comes in the VK-3381 package?", "greenhouse-gc200", 3, "includes the coil, diaphragm", _R),
    Question("Why are two irrigation zones never switched on at the same moment?", "greenhouse-gc200", 2,
             "never together, so that water pressure stays stable", _P),
    Question("Is the watering cancelled when the ground is still damp?", "greenhouse-gc200", 2,
             "skips the scheduled watering", _P),
    Question("How do I make every watering shorter for the autumn in one go?", "greenhouse-gc200", 2,
             "Seasonal adjust scales every run time", _P),
    Question("the screen went empty after the electricity came back", "greenhouse-gc200", 3,
             "hold the RESET button for ten seconds", _V),
    Question("what order to connect things when setting it up", "greenhouse-gc200", 1,
             "The transformer must be plugged in last", _V),
    # the bridge history (PDF, 2 pages)
    Question("In what year could carts first cross at Kellan instead of taking the ferry?", "kellan-bridge", 1,
             "opened to traffic in the spring of 1783", _R),
    Question("What stone is the old bridge made of, and how was it transported?", "kellan-bridge", 1,
             "pink sandstone quarried four miles upstream", _P),
    Question("How much did it cost to take a cart full of goods across?", "kellan-bridge", 1,
             "a loaded wagon sixpence", _P),
    Question("What damage did the 1840s flood do to the crossing?", "kellan-bridge", 2,
             "swept away the two southern arches", _P),
    Question("Since when have lorries been forbidden on it?", "kellan-bridge", 2,
             "Heavy goods vehicles were banned from the bridge in 1962", _P),
    Question("who can still use the old bridge today", "kellan-bridge", 2, "carried only pedestrians and cyclists",
             _V),
    Question("Where is the building that used to collect crossing fees?", "kellan-bridge", 1,
             "The toll house still stands at the northern end", _P),
    # the kimchi recipe (plain text: no pages)
    Question("How much salt do I need per kilo of cabbage?", "kimchi", None,
             "one tablespoon of salt for every five hundred grams", _P),
    Question("Why wash the salted cabbage before putting the seasoning on?", "kimchi", None,
             "Skipping the rinse makes the finished kimchi far too salty", _P),
    Question("What is gochugaru?", "kimchi", None, "Korean red pepper flakes called gochugaru", _R),
    Question("Is a whitish layer on top of my ferment dangerous?", "kimchi", None,
             "White film on the surface is usually harmless yeast", _P),
    Question("how long should it stay out before going in the fridge", "kimchi", None,
             "ferment at room temperature for one to two days", _V),
    # the travel insurance summary (DOCX with a table: no pages)
    Question("My suitcase showed up a day late: what can I claim back?", "wanderly-insurance", None,
             "refund essential purchases", _P),
    Question("Am I insured if I go parachuting on holiday?", "wanderly-insurance", None,
             "skydiving, bungee jumping", _P),
    Question("How much medical cover does TP-GOLD give?", "wanderly-insurance", None, "10 million euros", _R),
    Question("deadline for making a claim after the trip", "wanderly-insurance", None,
             "within 28 days of returning home", _V),
    Question("Will they fly me home if I fall seriously ill abroad?", "wanderly-insurance", None,
             "repatriation by air ambulance", _P),
    # the Arctic tern (Markdown: no pages)
    Question("How far does the bird fly in a year, pole to pole and back?", "arctic-tern", None,
             "about 70,000 kilometres", _P),
    Question("What does Sterna paradisaea eat?", "arctic-tern", None, "small fish such as sand eels", _R),
    Question("Why might one of these seabirds peck you on the head?", "arctic-tern", None,
             "Parents defend the nest fiercely", _P),
    Question("how old can they get", "arctic-tern", None, "a life that can last more than thirty years", _V),
    # cryogen safety (PDF: page 1 text layer, page 2 a scan read by OCR)
    Question("What protective gear is required when decanting LN2?", "lab-nitrogen", 1,
             "a face shield and loose-fitting cryogenic gloves", _R),
    Question("Why can the gas make someone pass out without them noticing?", "lab-nitrogen", 1,
             "colourless and odourless", _P),
    Question("At what oxygen percentage does the monitor go off?", "lab-nitrogen", 1, "below 19.5 percent", _P),
    Question("Can I take the elevator together with a dewar?", "lab-nitrogen", 1,
             "Never transport a dewar in a passenger lift", _P),
    Question("Which number do I phone if a coworker faints in FR-2?", "lab-nitrogen", 2, "emergency number 4455",
             _R),
    Question("should I go in and rescue someone who fell down in the freezer room", "lab-nitrogen", 2,
             "go back in to help", _V),
]


# --- builders: real files, made here ---------------------------------------------------------------


def text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with a real text layer, one page per list of paragraphs (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    out = io.BytesIO()
    style = getSampleStyleSheet()["BodyText"]
    story: list[object] = []
    for i, paragraphs in enumerate(pages):
        if i:
            story.append(PageBreak())
        story.extend(Paragraph(p, style) for p in paragraphs)
    SimpleDocTemplate(out, pagesize=A4).build(story)
    return out.getvalue()


def scan_image(lines: list[str], dpi: int = 200) -> Image.Image:
    """A 'scanned' letter-size page: text as pixels only (grey, 8.5 x 11 inches at ``dpi``)."""
    width, height = int(8.5 * dpi), 11 * dpi
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, round(48 * dpi / 200))
    for i, line in enumerate(lines):
        draw.text((round(150 * dpi / 200), round((200 + i * 80) * dpi / 200)), line, fill=0, font=font)
    return image


def image_pdf(images: list[Image.Image], dpi: int = 200) -> bytes:
    """An image-only PDF, one scan per page (no text layer at all)."""
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=float(dpi), save_all=True, append_images=images[1:])
    return out.getvalue()


def merge_pdfs(*documents: bytes) -> bytes:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    merged = pdfium.PdfDocument.new()
    for data in documents:
        merged.import_pages(pdfium.PdfDocument(data))
    out = io.BytesIO()
    merged.save(out)
    return out.getvalue()


def docx_bytes(blocks: list[str], table: list[list[str]] | None) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(blocks[0], level=1)
    for paragraph in blocks[1:]:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.rows[r].cells[c].text = cell
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def document_bytes(doc: Document) -> bytes:
    if doc.kind == "docx":
        return docx_bytes(doc.pages[0], doc.table)
    if doc.kind == "text":
        return ("\n\n".join(doc.pages[0]) + "\n").encode()
    # a PDF: runs of text pages made by reportlab, scanned pages as image-only PDF pages, merged in order
    parts: list[bytes] = []
    run: list[list[str]] = []
    for number, page in enumerate(doc.pages, start=1):
        if number in doc.scanned_pages:
            if run:
                parts.append(text_pdf(run))
                run = []
            parts.append(image_pdf([scan_image(page)]))
        else:
            run.append(page)
    if run:
        parts.append(text_pdf(run))
    return parts[0] if len(parts) == 1 else merge_pdfs(*parts)
