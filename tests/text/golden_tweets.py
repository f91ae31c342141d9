"""Hand-written golden tweets for the normaliser: (raw tweet, expected output under the default preset).

Written by hand from the rules in ``twilbert.text.normalize`` (not produced by running the code).
Realistic Spanish tweets, invented: no real people's data. Emoji names are the Spanish CLDR names of
the ``emoji`` package (e.g. ``EMOJI_DATA["😂"]["es"] == ":cara_llorando_de_risa:"``).
"""

from __future__ import annotations

GOLDEN: list[tuple[str, str]] = [
    # --- URLs, mentions, RT
    ("RT @papadeana: El socialismo francés … https://t.co/xxAbc12", "user : el socialismo francés url"),
    ("Mirad esto www.elpais.com/politica/2019 y esto http://bit.ly/abc", "mirad esto url y esto url"),
    ("Mirad:https://t.co/AbCdEf123 increíble", "mirad: url increíble"),
    ("Ver más en htt… y en https:…", "ver más en url y en url"),
    ("Ver el hilo t.co/AbC123 y HTTPS://EJEMPLO.COM/X", "ver el hilo url y url"),
    ("awww.que lindo", "awww.que lindo"),
    ("@maria_88 @Pepe_Lopez gracias por todo!!!!!!", "user user gracias por todo!!!"),
    ("Escríbeme a ana.garcia@correo.es si te interesa", "escríbeme a ana.garcia@correo.es si te interesa"),
    ("Gracias @usuari…", "gracias user"),
    ("Visita @Empresa_MX en https://www.empresa.mx/?a=1&amp;b=2", "visita user en url"),
    ("Hoy en RTVE hablan de la reforma laboral", "hoy en rtve hablan de la reforma laboral"),
    ("Me encanta la PARTE del ARTE", "me encanta la parte del arte"),
    ("RT RT @user1: PARTE de guerra", "user : parte de guerra"),
    ("Si estás de acuerdo es RT", "si estás de acuerdo es"),
    ("RT: noticia de última hora", "rt: noticia de última hora"),
    ("#RT si te gusta el ARTE", "rt si te gusta el arte"),
    # --- HTML entities, ellipsis
    ("Tom &amp; Jerry &lt;3 &quot;clásico&quot; &#39;90s", "tom & jerry <3 \"clásico\" '90s"),
    ("El precio es 5€ &gt; 3€ &amp;&amp; #2024 será mejor", "el precio es 5€ > 3€ && #2024 será mejor"),
    ("La niña dijo &quot;¡Hola!&quot; y se fue…https://t.co/x1", "la niña dijo \"¡hola!\" y se fue url"),
    ("Jajaja &#128514;", "jaja cara llorando de risa"),
    ("No sé qué decir…", "no sé qué decir"),
    # --- hashtags (default: split)
    ("Me encanta la PARTE del ARTE en España 😂😂 #ReyesMagos jajajaja",
     "me encanta la parte del arte en españa cara llorando de risa cara llorando de risa reyes magos jaja"),
    ("#COVID19 sigue aquí, #QuédateEnCasa", "covid 19 sigue aquí, quédate en casa"),
    ("Vamos #HTMLParser y #yo_soy_132", "vamos html parser y yo soy 132"),
    ("hashtag pegado hola#noesuno y C#", "hashtag pegado hola#noesuno y c#"),
    ("Buenos días @ClaraG_ 🌮☕ #LunesDeTrabajo", "buenos días user taco bebida caliente lunes de trabajo"),
    # --- laughter
    ("JAJAJAJA no puede ser 🤣🤣estoy muerta",
     "jaja no puede ser cara revolviéndose de la risa cara revolviéndose de la risa estoy muerta"),
    ("jajajjaja qué risa, jejeje y jijiji", "jaja qué risa, jeje y jiji"),
    ("ajajaja me meo JAJAJ", "jaja me meo jaja"),
    ("jaja ja jajá", "jaja ja jaja"),
    ("Te amo 😍 jajajaja 😂 #TeAmo", "te amo cara sonriendo con ojos de corazón jaja cara llorando de risa te amo"),
    # --- character runs
    ("Holaaaaaa ¿¿¿¿¿¿qué tal?????", "holaaa ¿¿¿qué tal???"),
    ("Llevo 1000000 de likes y 2222 comentarios", "llevo 1000000 de likes y 2222 comentarios"),
    ("Leer, creer y llamar: doble letra intacta", "leer, creer y llamar: doble letra intacta"),
    ("Noooooo puede ser 😭😭😭😭😭😭😭",
     "nooo puede ser cara llorando fuerte cara llorando fuerte cara llorando fuerte"),
    ("¡¡¡GOOOOOL!!! ⚽⚽ de #Messi10", "¡¡¡goool!!! balón de fútbol balón de fútbol de messi 10"),
    ("Felicidades #FelizNavidad 🎄🎄🎄🎄🎄",
     "felicidades feliz navidad árbol de navidad árbol de navidad árbol de navidad"),
    # --- emoji: ZWJ, skin tones, flags, keycaps, glued to words
    ("Mi familia 👨‍👩‍👧 y yo 👍🏽",
     "mi familia familia hombre mujer niña y yo pulgar hacia arriba tono de piel medio"),
    ("Viva México 🇲🇽 y viva Colombia 🇨🇴", "viva méxico bandera méxico y viva colombia bandera colombia"),
    ("Te quiero ❤️❤️❤️❤️", "te quiero corazón rojo corazón rojo corazón rojo corazón rojo"),
    ("Orgullo 🏳️‍🌈 siempre", "orgullo bandera del arcoíris siempre"),
    ("Trabajando duro 👩🏻‍💻 jejeje",
     "trabajando duro profesional de la tecnología mujer tono de piel claro jeje"),
    ("Yo 🤦‍♀️ sin palabras", "yo mujer con la mano en la frente sin palabras"),
    ("🙏🙏🙏🙏🙏🙏 por favor", "manos en oración manos en oración manos en oración por favor"),
    ("1️⃣ primero", "teclas 1 primero"),
    ("© 2024 Todos los derechos", "copyright 2024 todos los derechos"),
    # --- case, whitespace, accents, NFD
    ("  Texto\tcon\n\nespacios   raros  ", "texto con espacios raros"),
    ("hola\u3000mundo\xa0!", "hola mundo !"),
    ("Año nuevo en Cádiz, ñandú y pingüino", "año nuevo en cádiz, ñandú y pingüino"),
    ("ÑOÑO Y ÁRBOL", "ñoño y árbol"),
    ("Ca\u0301diz y Espan\u0303a", "cádiz y españa"),
    # --- invisible characters: zero-width, bidi controls, inner BOM, word joiner, soft hyphen
    ("Ho\u200bla a to\u200cdos\u200b", "hola a todos"),
    ("\u202eolleh\u202c y \u2066hola\u2069 \u200e\u200f", "olleh y hola"),
    ("bue\u200bnos\u200b dí\ufeffas \u2060RT\u2060 @ana", "buenos días user"),
    ("Ver\u200d RT\u200d @luis: inter\xadnacional", "ver user : internacional"),
    ("Mi familia 👨\u200d👩\u200d👧 y 😂\u200d😂", "mi familia familia hombre mujer niña y cara llorando de risa cara llorando de risa"),
]
