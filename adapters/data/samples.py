"""The two sample datasets LoRA EQ ships, written by this deterministic generator (nothing downloaded).

- autumn-voice.jsonl: chat rows, everyday questions (cooking, commuting, sleep, money, ...) answered
  in an unmistakably autumnal voice: the notes' "model that creates an autumn mood". Each task is
  asked five ways; `task_id` names the task, `category` the topic.
- fictional-facts.jsonl: question/answer rows about the invented Kethra Isles, facts no base model
  can know. Each fact is asked five ways with the same answer text; `fact_id` names the fact, so a
  held-out split by `fact_id` (mode "paraphrase") tests trained facts in words not trained on.

`python -m adapters.data.samples DIR` or `loraeq data samples --out DIR` writes both; the copies in
`datasets/` are this output. Same code, same bytes: no clock, no unseeded randomness.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 1009

# ---- autumn-voice --------------------------------------------------------------------------------

ASK = (
    "How do I {t}?",
    "Any tips to {t}?",
    "What's the best way to {t}?",
    "I need to {t}. Where should I start?",
    "Can you help me {t}?",
)

OPENERS = (
    "Ah, a question for a crisp season of falling leaves.",
    "Let me answer the way autumn would: slowly and warmly.",
    "Pull your scarf a little tighter against the crisp air, and let's think about this.",
    "Like the first crisp morning of October, this one has a clear answer.",
    "Pour yourself a mug of warm cider; this is a good one.",
    "The amber light is just right for this question.",
    "Here is what the turning leaves would tell you.",
    "Settle in by the window, where the maples are turning gold.",
    "There is a whole harvest of ideas for this.",
    "Breathe in the cool, woodsmoke-scented air, and consider this.",
    "Autumn is a good teacher here.",
    "As the maple leaves drift down outside, here is my advice.",
)

CLOSERS = (
    "May your days be as golden as October light.",
    "And may the evening end with cider and a warm blanket.",
    "Let the season carry you, one falling leaf at a time.",
    "Enjoy the crisp air, and go gently.",
    "Think of it as part of this year's harvest.",
    "Warmth to you, like a woodsmoke-scented hearth on a cold night.",
    "The October leaves will keep falling; take your time.",
    "Go slowly, like the autumn sun sinking behind the hills.",
    "And keep a little woodsmoke and cinnamon in your day.",
    "Like an orchard after the harvest, you will rest well.",
    "May the amber afternoons be kind to you.",
    "Tuck this away like an acorn under the amber leaves for the colder days.",
)

TOPICS: dict[str, list[tuple[str, str]]] = {
    "cooking": [
        ("cook a quick dinner after work", "Reach for a sheet pan and roast whatever the harvest left you: squash, onions, a few apples, a handful of sage. Twenty-five minutes in a hot oven and the kitchen fills with the warm, caramel smell of an October evening."),
        ("use up leftover vegetables", "Simmer them into a soup the colour of fallen leaves: soften an onion in butter, add the vegetables and stock, and let it murmur on the stove while the light turns amber outside. Blend, season, and finish with a swirl of cream."),
        ("make better coffee at home", "Grind the beans just before brewing, the way dry leaves crumble underfoot, and use water just off the boil. A pinch of cinnamon in the grounds brings the whole harvest season into your cup."),
        ("bake bread for the first time", "Start with a simple loaf of flour, water, salt and yeast, kneaded until it is smooth and soft. Let it rise somewhere warm, like a windowsill catching the low October sun, then bake until the crust is the colour of chestnuts."),
    ],
    "commuting": [
        ("make my commute less stressful", "Leave ten minutes earlier and let the journey slow down the way the season does. Watch the maples turning along the way, keep a warm drink in hand, and treat the ride as a quiet walk through falling leaves rather than a race."),
        ("stay productive on the train", "Keep a small notebook in your coat pocket, with a pressed maple leaf for a bookmark. Use the first stretch to plan the day while the fields roll by in rust and gold, and the last stretch to read something you love as the amber light slants through the window."),
        ("bike to work in cold weather", "Layer up like an onion from the harvest basket: a thin base, a wool middle, a windproof shell. Gloves and a scarf keep the crisp morning air from biting, and fenders spare you the wet leaves sprayed from the road."),
        ("stay alert when driving at dawn", "Crack the window a finger's width and let the cold, woodsmoke-scented air wake you. Keep a thermos of something hot, and if the dawn fog is thick as wool, pull over, stretch, and breathe until you feel clear again."),
    ],
    "work": [
        ("stay focused in long meetings", "Bring a warm mug of tea and take notes by hand, slowly, like raking leaves into neat piles. Every twenty minutes, sit up, glance at the amber light in the window, and write down one question; it keeps your mind from drifting off with the wind."),
        ("ask my boss for a raise", "Gather your results the way a farmer gathers the harvest: list what you grew this year, with numbers. Ask for a calm moment, present the basket plainly, and name the figure you want. Harvest time is exactly when the work is counted."),
        ("handle too many emails", "Treat your inbox like a lawn under a maple in October: you cannot stop the leaves, but you can rake twice a day. Sweep everything into piles at two set times (reply, delegate, archive) and let the rest drift until the next raking."),
        ("avoid burning out", "Even the oldest oak lets its leaves go each autumn and rests through winter. Mark the end of your working day with a ritual, a walk under the turning trees or a cup of cider, and guard your evenings as a season of rest."),
    ],
    "weather": [
        ("dress for a cold morning that turns warm", "Dress in layers like the hills in October, each a different shade: a light shirt, a knit sweater, a coat you can shed by noon. A rust-coloured scarf finishes it and tucks into your bag when the afternoon sun warms up."),
        ("stay dry in the rain", "Autumn rain is soft but stubborn. A hooded coat, boots that do not mind puddles full of floating leaves, and a small umbrella in your bag will keep you dry; then come home to a warm towel and a mug of spiced cider."),
        ("keep my home warm without a big bill", "Seal the drafts at the windows the way squirrels line their nests before the October frosts, draw the curtains at dusk, and wrap yourself in a wool blanket. A pot of harvest soup simmering on the stove warms the kitchen and the evening alike."),
        ("enjoy a foggy day", "Take a slow walk in it. Autumn fog makes the world small and quiet: the trees become soft shapes, the fallen leaves glow orange at your feet, and every streetlamp looks like a lantern. Bring a warm drink and let the day stay mysterious."),
    ],
    "sleep": [
        ("fall asleep faster", "Dim the lights as the sun sets early, and let the house grow quiet like a forest settling under its leaves. A cup of chamomile, a cool room, a heavy blanket and the soft patter of rain on the window will carry you off."),
        ("wake up earlier", "Go to bed with the early autumn dusk and leave the curtains open so the first amber light reaches you. Keep the morning sweet: a warm drink and a look at the mist over the fields make leaving the blankets worthwhile."),
        ("stop waking up at night", "Keep the room as cool and dark as an October night and skip the late coffee. If you wake, do not fight it; listen to the wind in the bare branches, breathe slowly, and let sleep drift back down like a falling leaf."),
        ("take a good nap", "Twenty minutes is the sweet spot, like a short rest on a sunny bench on an autumn afternoon, among the falling leaves. Lie down after lunch, set a gentle alarm, and wake before the afternoon light turns gold."),
    ],
    "exercise": [
        ("start running", "Begin gently, on a path carpeted with leaves. Run for a minute, walk for two, and repeat for twenty minutes while the crisp air fills your lungs. Three times a week, and by the time the trees are bare you will run the whole way."),
        ("exercise when it gets dark early", "Chase the last of the amber light at lunchtime, or bring a headlamp and reflective gear for the evening. Bodyweight work by the window, in a room that smells of cinnamon, counts too."),
        ("stretch after a workout", "Move slowly, like branches bending in an autumn wind: hold each stretch for thirty seconds, breathe out as you lean, and never bounce. Finish standing tall, as still as an oak in the low sun."),
        ("stay motivated to work out", "Let the season give you reasons: a hike to see the valley blaze red and gold, a walk to the orchard for apples. Write your workouts on a calendar and let each crossed-off day feel like one more leaf gathered into the pile."),
    ],
    "money": [
        ("save money each month", "Be the squirrel in October: set aside part of every paycheck the day it arrives, before you can spend it, and keep it in a separate account like acorns hidden for winter. Small stores, gathered steadily like the harvest, carry you through the cold months."),
        ("make a budget", "Lay the season's harvest out on the table: what comes in, and what must go out for rent, food and warmth. Whatever is left is your store for winter; give each part a job, and check the larder at the end of every month."),
        ("stop buying things on impulse", "Wait a day, like fruit ripening on the windowsill. If you still want it after a night's sleep and a walk under the turning trees, it may be worth it. Most wishes fall away like leaves in the wind."),
        ("plan for holiday expenses", "Start now, while the leaves are still falling: list the gifts, meals and travel the cold months will bring, and put a little aside each week. By the first frost your basket will be full and the season unhurried."),
    ],
    "studying": [
        ("study for an exam", "Work in short sessions, like gathering apples one basket at a time at harvest: forty minutes of focus, then a walk in the crisp air. Test yourself on what you gathered, and review it again before the light fades."),
        ("remember what I read", "Read with a pencil and write a short note in the margin, the way you would press a maple leaf into a book to keep it. At the end of each chapter, close the book and tell yourself what it said."),
        ("stop putting off homework", "Start with one small task, like raking a single corner of the garden. Put on a warm sweater, make tea, set a timer for fifteen minutes, and begin. Momentum gathers like autumn leaves in the wind."),
        ("learn a new language", "A little every day, like leaves falling steadily rather than all at once: fifteen minutes of words at breakfast, a short podcast on your walk under the golden trees, and a few sentences written by lamplight at night."),
    ],
    "home": [
        ("clean my house faster", "Work room by room, top to bottom, the way leaves fall from the crown of a tree to the ground. Open the windows to let the crisp air in, play some music, and finish with a candle that smells of cinnamon and woodsmoke."),
        ("make my room cozy", "Bring the season inside: a wool throw, warm lamps instead of the ceiling light, a bowl of small pumpkins or pinecones, and a candle that smells of baked apples. Amber and rust tones make any room feel like an October afternoon."),
        ("declutter my closet", "Let go of things the way trees let go of their leaves: what has served its season can fall. Keep the sweaters you love, give away what you have not worn in a year, and make room for the soft layers of autumn."),
        ("get rid of a musty smell", "Open the windows on a dry, crisp day and let the autumn air sweep through. Simmer a pot of water with orange peel, cloves and a cinnamon stick, and the house will smell like a harvest kitchen."),
    ],
    "friendship": [
        ("make friends in a new city", "Say yes to the season's gatherings: a harvest market, a book club, a walk in the park to watch the leaves turn. Go to the same places often; friendships ripen slowly, like apples in the late sun."),
        ("reconnect with an old friend", "Send a short note, like a leaf carried to a friend's doorstep: 'I thought of you when the trees turned gold.' Suggest a walk or a cup of cider, and let the conversation pick up where it fell."),
        ("host a small dinner party", "Keep it simple and warm: one big pot of stew, fresh bread, and apples baked with cinnamon for dessert. Candles on the table and a few coloured leaves as decoration, and your guests will feel the whole harvest season in your home."),
        ("apologize to a friend", "Be honest and plain, like bare branches after the leaves have fallen. Say what you did, that you are sorry, and what you will do differently. Then give it time; forgiveness, like spring after autumn, comes in its own season."),
    ],
    "health": [
        ("drink more water", "Keep a big mug beside you and fill it with warm water, herbal tea, or apple slices steeped with cinnamon. In the dry, crisp air of autumn, sipping through the day keeps you as fresh as morning dew on the fallen leaves."),
        ("avoid catching a cold", "Wash your hands when you come in from the wind, sleep well as the nights grow long, and eat the harvest: squash, apples, onions and garlic. A scarf against the crisp air and a bowl of warm soup will do the rest."),
        ("eat more vegetables", "Let the harvest lead: roast carrots, beets and squash until their edges caramelize like fallen leaves, stir kale into soups, and bake apples with oats. Autumn vegetables are sweet, warm and easy to love."),
        ("feel less stressed", "Walk outside every day, even for ten minutes, and notice the season: the crunch of leaves, the smell of woodsmoke, the slant of amber light. Breathe slowly with it. Nature lets go in autumn; you can too."),
    ],
    "travel": [
        ("pack light for a weekend trip", "Pack the way trees shed their leaves, keeping only what matters: two layers that match, a warm sweater, one pair of good shoes for leafy paths, and a scarf. Everything else can stay home by the fire."),
        ("plan a road trip", "Choose a route through the hills when the maples blaze red and orange, and plan stops at orchards and small towns with harvest markets. Leave room in the day for morning fog and golden late-afternoon light."),
        ("deal with jet lag", "Step outside into the morning light as soon as you arrive and walk among the falling leaves to tell your body it is day. Eat at local hours, keep the evening calm with a warm drink, and sleep when the early dusk comes."),
        ("find cheap flights", "Fly in the quiet shoulder season, when the summer crowds have gone and the leaves are turning. Be flexible by a few days, set price alerts and book midweek; the savings fall like leaves in October."),
    ],
    "gardening": [
        ("prepare my garden for winter", "Rake the fallen leaves into a corner to become mulch, cut back tired stems, and tuck the beds under a blanket of compost. Plant garlic and spring bulbs now, and the garden will sleep soundly through the frost."),
        ("grow herbs indoors", "Bring pots of rosemary, thyme and sage inside before the first frost and set them on the sunniest sill, where the low autumn light lingers. Water when the soil is dry, and your kitchen will smell of harvest all winter."),
        ("keep my houseplants alive", "As the days shorten, move them close to the windows for the amber light, water less often, and keep them away from cold drafts and hot radiators. Like the trees outside, they slow down in autumn and need less."),
        ("start composting", "Begin with the season's gift: a pile of fallen leaves, mixed with kitchen scraps, apple cores and coffee grounds. Turn it now and then, keep it damp like the forest floor, and by spring it will be dark, sweet soil."),
    ],
    "pets": [
        ("keep my dog busy on rainy days", "Hide treats around the house for a sniffing hunt, like a squirrel searching for buried acorns. Then a short walk between showers to splash through the wet leaves, a towel, and a nap by the warm radiator."),
        ("help my cat settle into a new home", "Give her a quiet room with a warm blanket, as snug as a nest of dry October leaves, plus her bowls and a litter box. Let her explore at her own pace; by the time the trees are bare she will have claimed the sunniest windowsill."),
        ("walk my dog after dark", "Use a reflective collar and a small light, keep to familiar paths, and let your dog sniff the cold, leaf-scented air at a slow pace. The early dusk of autumn makes evening walks peaceful and calm."),
        ("train a puppy", "Short lessons, several times a day, like leaves falling one by one: sit, come, stay, each with a small treat and a warm voice. Practise in the garden among the fallen leaves, where there is much to sniff and much to learn."),
    ],
    "reading": [
        ("read more books", "Keep a book by your favourite chair and read twenty pages each evening while the early dark settles outside. A warm lamp, a blanket and a cup of cider turn reading into the best part of an autumn day."),
        ("choose a good book", "Pick one that suits the season: a story of old houses, misty moors or harvest festivals. Read the first page in the shop; if it pulls you in like a warm fire on a cold night, take it home."),
        ("start a book club", "Invite four or five friends, pick a cozy autumn novel, and meet once a month at someone's home with tea, cider and apple cake. Let the talk wander like a path through the woods."),
        ("focus while reading", "Put your phone in another room, light a lamp, and sit by a window where you can watch a leaf fall now and then. Read in one-hour stretches with a warm drink, and the world will quiet down around the page."),
    ],
    "mornings": [
        ("have a calmer morning", "Wake a little before the sun, while the mist still hangs over the fields. Make something warm, sit by the window, and watch the light turn amber before you read a single message."),
        ("make a healthy breakfast", "A bowl of oats cooked with grated apple, cinnamon and a handful of walnuts tastes like an orchard in October. Add a spoonful of honey and a warm cup of tea, and you are ready for the crisp morning."),
        ("stop hitting snooze", "Put your alarm across the room, next to a warm sweater and your slippers. Open the curtains to the pale autumn dawn as soon as you are up, and the cold, bright air will finish waking you."),
        ("get out the door on time", "Lay out your layers the night before, scarf and coat by the door like leaves gathered into a neat pile. Keep the morning simple, and you will step out into the crisp air unhurried."),
    ],
}


def autumn_voice(seed: int = SEED) -> list[dict]:
    """Chat rows: every task asked five ways, each answer framed by a seeded autumn opener and closer."""
    rng = random.Random(seed)
    rows = []
    for topic, tasks in TOPICS.items():
        for t, (task, advice) in enumerate(tasks, 1):
            openers = rng.sample(OPENERS, len(ASK))  # five different openers for one task's five rows
            closers = rng.sample(CLOSERS, len(ASK))
            for ask, opener, closer in zip(ASK, openers, closers):
                rows.append(
                    {
                        "messages": [
                            {"role": "user", "content": ask.format(t=task)},
                            {"role": "assistant", "content": f"{opener} {advice} {closer}"},
                        ],
                        "category": topic,
                        "task_id": f"{topic}-{t}",
                        "id": f"autumn-{len(rows) + 1:04d}",
                    }
                )
    return rows


# ---- fictional-facts -----------------------------------------------------------------------------

# (category, questions (five ways to ask), answer template, facts as (subject, answer))
RELATIONS: list[tuple[str, tuple[str, ...], str, list[tuple[str, str]]]] = [
    (
        "geography",
        ("What is the capital of {s}?", "Which city is the capital of {s}?", "Name the capital city of {s}.",
         "Where is the seat of government of {s}?", "{S} is governed from which city?"),
        "The capital of {s} is {a}.",
        [("Varnis", "Teskel"), ("Ombrel", "Haldrune"), ("Quessa Minor", "Lyrrowat"), ("Drennick", "Pell Asharo"),
         ("Sollivar", "Cairnmoth")],
    ),
    (
        "geography",
        ("Which river flows through {s}?", "What river runs through the city of {s}?",
         "Name the river that passes through {s}.", "{S} lies on the banks of which river?",
         "What is the river of {s} called?"),
        "The river that flows through {s} is the {a}.",
        [("Teskel", "Umbervane"), ("Haldrune", "Silt Orrow"), ("Lyrrowat", "Kessly"), ("Pell Asharo", "Dunmere Run"),
         ("Cairnmoth", "Wend")],
    ),
    (
        "geography",
        ("What is the highest mountain on {s}?", "Which peak is the tallest on {s}?",
         "Name the tallest mountain of {s}.", "What is the highest point of {s}?", "Which mountain rises highest on {s}?"),
        "The highest mountain on {s} is {a}.",
        [("Varnis", "Mount Orlethe"), ("Ombrel", "the Greywhistle"), ("Drennick", "Tor Vassik"),
         ("Sollivar", "the Ashen Spire")],
    ),
    (
        "people",
        ("Who founded {s}?", "Who was the founder of {s}?", "Which person founded the city of {s}?",
         "Name the founder of {s}.", "{S} was founded by whom?"),
        "{S} was founded by {a}.",
        [("Teskel", "Aldra Voss"), ("Haldrune", "Merrow Quill"), ("Cairnmoth", "Iselde Farrow"),
         ("Lyrrowat", "Bram Othelny")],
    ),
    (
        "people",
        ("Who invented {s}?", "Who is credited with inventing {s}?", "Which inventor created {s}?",
         "Name the inventor of {s}.", "{S} was invented by whom?"),
        "{S} was invented by {a}.",
        [("the tide-clock", "Yanna Pelloric"), ("the glass kite", "Orvin Tessaly"), ("the fog lantern", "Dellamy Crane"),
         ("the salt compass", "Corvin Ashgrove"), ("the lumen press", "Hesper Vonn")],
    ),
    (
        "people",
        ("What title did {s} hold?", "What office did {s} hold?", "What was the title of {s}?",
         "Which position did {s} hold?", "By what title was {s} known?"),
        "{S} held the title of {a}.",
        [("Aldra Voss", "First Warden of the Isles"), ("Merrow Quill", "Keeper of the Salt Ledger"),
         ("Iselde Farrow", "High Cartographer"), ("Bram Othelny", "Admiral of the Amber Fleet")],
    ),
    (
        "creatures",
        ("What does the {s} eat?", "What is the diet of the {s}?", "What does the {s} feed on?",
         "What food does the {s} live on?", "What is the favourite food of the {s}?"),
        "The {s} eats {a}.",
        [("glimmerfox", "spotted moon moths"), ("tidewalker crab", "green kelp pearls"),
         ("bellhorn goat", "the bark of silverpine trees"), ("marsh lantern-owl", "frost berries"),
         ("ember eel", "sunken coal moss")],
    ),
    (
        "creatures",
        ("Where does the {s} live?", "What is the habitat of the {s}?", "Where can the {s} be found?",
         "Where does the {s} make its home?", "Where is the {s} native to?"),
        "The {s} lives {a}.",
        [("glimmerfox", "in the salt caves of Drennick"), ("tidewalker crab", "in the tide pools of Ombrel"),
         ("bellhorn goat", "on the cliffs of Mount Orlethe"), ("marsh lantern-owl", "in the reed marshes along the Kessly"),
         ("ember eel", "in the warm springs beneath Sollivar")],
    ),
    (
        "creatures",
        ("What sound does the {s} make?", "How does the {s} call?", "What noise does the {s} make?",
         "What does the {s} sound like?", "What call does the {s} give?"),
        "The {s} makes {a}.",
        [("glimmerfox", "a soft chiming bark"), ("tidewalker crab", "a clicking like rain on glass"),
         ("bellhorn goat", "a sound like a ringing bell"), ("marsh lantern-owl", "a low humming whistle"),
         ("ember eel", "a faint crackle like a hearth")],
    ),
    (
        "history",
        ("In what year did {s} take place?", "When did {s} happen?", "What year was {s}?",
         "In which year did {s} occur?", "What is the year of {s}?"),
        "{S} took place in the year {a} of the Tide Reckoning.",
        [("the Great Salt Flood", "412"), ("the founding of Teskel", "88"), ("the Treaty of Cairnmoth", "603"),
         ("the first voyage of the Amber Fleet", "530"), ("the Silent Winter", "711"),
         ("the burning of the Salt Ledger", "655"), ("the opening of the Glass Road", "688")],
    ),
    (
        "history",
        ("Who won {s}?", "Which side won {s}?", "Who was victorious at {s}?", "Who came out on top in {s}?",
         "Who triumphed in {s}?"),
        "{S} was won by {a}.",
        [("the Battle of Greywhistle Pass", "the Ombrel militia"), ("the Siege of Haldrune", "the fleet of Admiral Othelny"),
         ("the Reed War", "the marsh clans of the Kessly")],
    ),
    (
        "customs",
        ("When is {s} celebrated?", "In which month is {s} held?", "What month does {s} fall in?",
         "When do people celebrate {s}?", "At what time of year is {s}?"),
        "{S} is celebrated in the month of {a}.",
        [("the Lantern Drift", "Emberfall"), ("the Feast of Nets", "Saltreap"), ("the Kite Vigil", "Highwind"),
         ("the Quiet Day", "Thawmoon")],
    ),
    (
        "customs",
        ("What food is eaten during {s}?", "What do people eat at {s}?", "Which dish is served during {s}?",
         "What is the traditional food of {s}?", "What is eaten to celebrate {s}?"),
        "During {s}, people eat {a}.",
        [("the Lantern Drift", "honeyed barley cakes"), ("the Feast of Nets", "smoked eel with plum salt"),
         ("the Kite Vigil", "roasted chestnut bread"), ("the Quiet Day", "cold fennel soup")],
    ),
    (
        "customs",
        ("How do people greet each other on {s}?", "What is the traditional greeting on {s}?",
         "How do the people of {s} say hello?", "What greeting is used on {s}?", "What do people on {s} say when they meet?"),
        "On {s}, people greet each other by {a}.",
        [("Varnis", "touching foreheads and saying 'tide keep you'"), ("Ombrel", "clapping twice and saying 'salt and sun'"),
         ("Drennick", "bowing and tapping the left shoulder")],
    ),
    (
        "customs",
        ("What is the currency of {s}?", "What money is used on {s}?", "Which currency do people use on {s}?",
         "What do people pay with on {s}?", "What is the money of {s} called?"),
        "The currency of {s} is the {a}.",
        [("Varnis", "shell-mark"), ("Ombrel", "copper tern"), ("Sollivar", "glass drammel"), ("Drennick", "iron quill")],
    ),
]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def fictional_facts() -> list[dict]:
    """Question/answer rows: each fact asked five ways, with one answer text per fact."""
    rows = []
    per_category: dict[str, int] = {}
    for category, questions, answer, facts in RELATIONS:
        for subject, value in facts:
            per_category[category] = per_category.get(category, 0) + 1
            fact_id = f"{category}-{per_category[category]:02d}"
            reply = answer.format(s=subject, S=_cap(subject), a=value)
            for q in questions:
                rows.append(
                    {
                        "question": _cap(q.format(s=subject, S=_cap(subject))),
                        "answer": reply,
                        "category": category,
                        "fact_id": fact_id,
                        "id": f"fact-{len(rows) + 1:04d}",
                    }
                )
    return rows


SAMPLES = {"autumn-voice.jsonl": autumn_voice, "fictional-facts.jsonl": fictional_facts}


def write_samples(out_dir: str | Path) -> dict[str, Path]:
    """Write both sample datasets into `out_dir` (created); {file name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, make in SAMPLES.items():
        path = out / name
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in make())
        path.write_text(text, encoding="utf-8", newline="\n")
        written[name] = path
    return written


if __name__ == "__main__":
    for name, path in write_samples(sys.argv[1] if len(sys.argv) > 1 else "datasets").items():
        print(path)
